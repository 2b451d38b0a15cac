"""Pieces shared by the widget apps: PNG rendering of image tensors, a debouncer, FigureWidget probing."""
from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Callable

import numpy as np
import torch

DEFAULT_DEBOUNCE_SECONDS = 0.12
DISPLAY_PIXELS = 160  # images are upscaled (nearest) to about this width, so 32 px models stay crisp


def image_to_png(image: torch.Tensor, display_pixels: int = DISPLAY_PIXELS) -> bytes:
    """PNG bytes of one image [C, H, W] with values in [-1, 1] (C = 1 or 3), nearest-upscaled."""
    from PIL import Image

    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(np.asarray(image))
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected one image [C, H, W] with C = 1 or 3, got shape {tuple(image.shape)}")
    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = pixels.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    scale = max(1, display_pixels // max(picture.size))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # fast: these images are small and change often
    return buffer.getvalue()


def image_widget(image: torch.Tensor | None, css_class: str, display_pixels: int = DISPLAY_PIXELS):
    import ipywidgets

    widget = ipywidgets.Image(format="png", width=display_pixels, height=display_pixels)
    widget.add_class(css_class)
    if image is not None:
        widget.value = image_to_png(image, display_pixels)
    return widget


def captioned(widget, caption: str):
    import ipywidgets

    return ipywidgets.VBox([ipywidgets.HTML(f"<b>{caption}</b>"), widget],
                           layout=ipywidgets.Layout(align_items="center", margin="0 8px"))


class Debouncer:
    """Run `function` once, `delay` seconds after the last `trigger()`, so a dragged slider costs one
    update with its final value instead of one per intermediate value.

    Inside Jupyter (a running asyncio loop, as in ipykernel) the call is scheduled on that loop; with no
    running loop (plain Python, tests) or `delay <= 0` it runs at once, so programmatic use stays
    synchronous. `flush()` runs a pending call now.
    """

    def __init__(self, function: Callable[[], None], delay: float = DEFAULT_DEBOUNCE_SECONDS):
        if delay < 0:
            raise ValueError(f"debounce delay must be >= 0 seconds, got {delay}")
        self.function = function
        self.delay = float(delay)
        self._handle: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def trigger(self) -> None:
        loop = _running_loop()
        if self.delay <= 0 or loop is None:
            self.cancel()
            self.function()
            return
        self.cancel()
        self._handle = loop.call_later(self.delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.function()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def flush(self) -> None:
        if self._handle is not None:
            self.cancel()
            self.function()


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Stopwatch:
    """Latency bookkeeping: `last_update_seconds` and the history `update_seconds`."""

    def __init__(self):
        self.last_update_seconds: float | None = None
        self.update_seconds: list[float] = []

    def record(self, start: float) -> float:
        elapsed = time.perf_counter() - start
        self.last_update_seconds = elapsed
        self.update_seconds.append(elapsed)
        return elapsed


def figure_widget_support() -> tuple[bool, str]:
    """(True, "") when plotly's FigureWidget can be built here, else (False, the reason)."""
    try:
        import plotly.graph_objects as go

        go.FigureWidget()
    except Exception as error:  # ImportError without anywidget, or a broken install
        return False, f"{type(error).__name__}: {error}"
    return True, ""


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so latencies measure the update, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# "auto" runs updates of models below this size on one CPU thread (see cpu_threads).
SINGLE_THREAD_PARAMETERS = 5_000_000


def resolve_thread_count(count, model) -> int | None:
    """The apps' `cpu_threads` argument -> a thread count for updates, or None (torch's setting).

    "auto": one thread for small models on CPU, else None. On a busy machine a small model's update is
    far faster on one thread than on two (two threads that must meet at every op starve when other
    processes hold a core; the browser and the Jupyter server share the machine; measured:
    docs/benchmarks.md, "Other measurements behind code defaults"). Large models keep all threads.
    """
    if count == "auto":
        small = sum(parameter.numel() for parameter in model.parameters()) < SINGLE_THREAD_PARAMETERS
        return 1 if small and model.device.type == "cpu" else None
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"cpu_threads must be 'auto', a positive integer or None, got {count!r}")
    return count


@contextlib.contextmanager
def cpu_threads(count: int | None, device: torch.device):
    """Run with `count` torch CPU threads (restored afterwards); None or a GPU device changes nothing."""
    if count is None or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_widget_seeds(seeds) -> list[int]:
    """A seed or a non-empty list of non-negative integer seeds -> list (the apps' seed dropdown)."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds or any(isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 for seed in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    return seeds


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WidgetApp:
    """What EditingApp and SpectrumExplorer share: latency bookkeeping, debounced control events, display,
    and running an update under the app's CPU-thread setting with errors shown in the status line.

    A subclass sets `model`, `widget`, `status`, `stopwatch`, `last_error`, `cpu_threads`, `_holding`
    and `_debouncer` (whose function is the subclass's debounced update) in its __init__.
    """

    @property
    def last_update_seconds(self) -> float | None:
        return self.stopwatch.last_update_seconds

    @property
    def update_seconds(self) -> list[float]:
        return self.stopwatch.update_seconds

    def flush(self) -> None:
        """Apply a pending (debounced) update now."""
        self._debouncer.flush()

    def close(self) -> None:
        self._debouncer.cancel()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _set_controls(self, changes: dict) -> None:
        """Set control values without firing an update per control (the caller applies once)."""
        self._holding = True
        try:
            for control, value in changes.items():
                control.value = value
        finally:
            self._holding = False

    def _on_change(self, change) -> None:
        if not self._holding:
            self._debouncer.trigger()

    def _run_update(self, update: Callable[[], None], raise_errors: bool) -> float | None:
        """Run `update`; return its latency in seconds, or None after an error (shown in the status
        line, and raised when `raise_errors`: programmatic calls raise, slider events must not)."""
        start = time.perf_counter()
        try:
            with cpu_threads(self.cpu_threads, self.model.device):
                update()
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}"
            self.status.value = f"<span style='color:#b00'>update failed: {escape(self.last_error)}</span>"
            if raise_errors:
                raise
            return None
        self.last_error = None
        return self.stopwatch.record(start)
