"""Training-loop helpers shared by every train.py: processes (DDP), optimizer, LR schedule, progress bar, metrics
log, loss plot, summary."""
import json
import math
import os
import sys
import time
from collections import deque
from pathlib import Path

import torch
from tqdm import tqdm

from common.device import pick_device, pick_dtype, seed_everything


def process_start() -> float:
    """The `time.perf_counter()` value at which this process started (Linux: from /proc; elsewhere: now), so a
    wall time counts interpreter start-up and imports, as timing the command from the shell would."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        age = float(open("/proc/uptime").read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        age = 0.0
    return time.perf_counter() - age


def setup_ddp(device_name):
    """Launched by torchrun (RANK is set): join the process group, one GPU per process. Else one process."""
    if "RANK" not in os.environ:
        return 0, 1, pick_device(device_name)
    import torch.distributed as dist
    device = pick_device(device_name)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # gloo: CPU, used by the tests
    return dist.get_rank(), dist.get_world_size(), device


def start_run(device_name: str, dtype_name: str, seed: int):
    """What every train.py does first: join the processes (setup_ddp), pick the dtype, seed every generator, and
    a `say` that prints on the main process only → (rank, world, device, dtype, is_main, say)."""
    rank, world, device = setup_ddp(device_name)
    dtype = pick_dtype(dtype_name, device)
    seed_everything(seed)
    is_main = rank == 0
    return rank, world, device, dtype, is_main, (print if is_main else (lambda *a, **k: None))


def mean_over_processes(value, world: int) -> float:
    """A per-process scalar tensor (this step's loss) → its mean over all processes, as a float."""
    if world > 1:
        value = value.clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.AVG)
    return value.item()


def make_optimizer(model, lr, weight_decay, device):
    """AdamW with two groups: matrices (and embeddings) decay; norms' gains do not — pulling a gain towards 0
    only fights the normalization. Fused kernels on CUDA: one launch updates every parameter."""
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    decay, no_decay = [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **extra)


LOG_LINE_SECONDS = 5.0  # without a terminal, a progress line this often instead of carriage-return redraws


class _LineFile:
    """What a progress bar writes, as whole lines: tqdm redraws its bar with carriage returns, which a log file
    (CI, `make course | tee`) would keep as thousands of updates glued into one line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        line = s.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(total: int, desc: str, **kwargs) -> tqdm:
    """A tqdm bar on stderr: live in a terminal; elsewhere one plain line every LOG_LINE_SECONDS seconds."""
    stream = kwargs.pop("file", sys.stderr)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, file=stream, dynamic_ncols=True, mininterval=0.5, **kwargs)
    return tqdm(total=total, desc=desc, file=_LineFile(stream), ncols=100, mininterval=LOG_LINE_SECONDS, **kwargs)


def lr_at(step: int, *, max_lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup to max_lr, then cosine decay to min_lr_ratio * max_lr at total_steps (flat after).
    Warmup avoids large early updates while Adam's moment estimates are still noise."""
    min_lr = max_lr * min_lr_ratio
    if warmup_steps > 0 and step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 → 1
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class RunLogger:
    """Progress bar (loss, running average, LR, tokens/s), `metrics.jsonl` and a loss-curve PNG for one run.

    Every call to `train_step` appends {"kind": "train", "step", "loss", "lr", ...} to metrics.jsonl;
    `eval` appends {"kind": "eval", "step", ...}. `close()` draws loss_curve.png from that file.
    """

    def __init__(self, out_dir, total_steps: int, desc: str = "train", start_step: int = 0,
                 enabled: bool = True, avg_window: int = 50, plot_name: str = "loss_curve.png"):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.plot_path = self.out_dir / plot_name
        self.enabled = enabled
        if enabled:
            if start_step == 0:
                self.metrics_path.write_text("")
            else:  # resuming: keep only the lines before the step we resume from
                self._truncate_after(start_step)
        self.recent = deque(maxlen=avg_window)
        self.t_last = time.perf_counter()
        self.bar = progress(total_steps, desc, initial=start_step, disable=not enabled)

    def _truncate_after(self, start_step: int) -> None:
        if not self.metrics_path.exists():
            return
        keep = [ln for ln in self.metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] < start_step]
        self.metrics_path.write_text("".join(ln + "\n" for ln in keep))

    def _append(self, record: dict) -> None:
        if self.enabled:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def train_step(self, step: int, loss: float, lr: float, tokens: int = 0, **extra) -> None:
        """Record one optimizer step. `tokens`: tokens processed in this step (for tokens/s)."""
        now = time.perf_counter()
        tok_s = tokens / max(now - self.t_last, 1e-9)
        self.t_last = now
        self.recent.append(loss)
        avg = sum(self.recent) / len(self.recent)
        self.bar.set_postfix(loss=f"{loss:.4f}", avg=f"{avg:.4f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:,.0f}", refresh=False)
        self.bar.update(1)
        self._append({"kind": "train", "step": step, "loss": loss, "lr": lr, "tokens_per_s": tok_s, **extra})

    def eval(self, step: int, **metrics) -> None:
        """Record evaluation figures (val_loss, accuracy, ...) and print them above the bar."""
        self._append({"kind": "eval", "step": step, **metrics})
        shown = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        self.write(f"step {step}: {shown}")

    def write(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def close(self) -> Path | None:
        self.bar.close()
        return plot_loss_curve(self.metrics_path, self.plot_path) if self.enabled else None


def plot_loss_curve(metrics_path, png_path, title: str | None = None) -> Path | None:
    """Train loss (light), its moving average, and any eval losses from a metrics.jsonl, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in Path(metrics_path).read_text().splitlines() if ln.strip()]
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = zip(*train)
    ax.plot(steps, losses, alpha=0.3, label="train loss")
    k = max(1, len(losses) // 50)
    if k > 1:
        smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, label=f"train loss (avg of {k})")
    for key in sorted({k for r in rows if r["kind"] == "eval" for k in r if k.endswith("loss")}):
        pts = [(r["step"], r[key]) for r in rows if r["kind"] == "eval" and key in r]
        ax.plot(*zip(*pts), "o-", label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or Path(png_path).parent.name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)


def print_summary(**figures) -> None:
    """The last line every train.py/bench.py prints: one JSON object of the run's figures."""
    print(json.dumps(figures, ensure_ascii=False, default=str), flush=True)
