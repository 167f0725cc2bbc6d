"""The command-line flags every step shares (design §2), and the guard that turns user errors into one line."""
import argparse
import sys

from common.errors import CourseError


def course_parser(description: str, **defaults) -> argparse.ArgumentParser:
    """An ArgumentParser with the shared flags. Keyword arguments override their defaults for one script,
    e.g. course_parser("...", lr=3e-4, out="runs/pretrain"). Steps add their own flags afterwards."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("shared course flags")
    g.add_argument("--device", default="auto", help="设备 device: auto (cuda > mps > cpu), cpu, cuda, mps")
    g.add_argument("--dtype", default="auto", help="计算精度 compute dtype: auto (bf16 on GPU), float32, bfloat16")
    g.add_argument("--epochs", type=float, default=None, help="训练轮数 passes over the training data")
    g.add_argument("--max-steps", type=int, default=None, help="最多优化步数 stop after this many optimizer steps")
    g.add_argument("--batch-size", type=int, default=None, help="批大小 sequences per optimizer step (per process)")
    g.add_argument("--lr", type=float, default=None, help="峰值学习率 peak learning rate")
    g.add_argument("--seed", type=int, default=1337, help="随机种子 seed for data, init and sampling")
    g.add_argument("--size", default=None, help="模型规模 model preset (tiny, small, base)")
    g.add_argument("--data", default=None, nargs="*", help="数据 data files/folders instead of the built-in world")
    g.add_argument("--out", default=None, help="输出目录 output folder for checkpoints, metrics and plots")
    g.add_argument("--init", default=None, help="初始权重 checkpoint folder to start from")
    g.add_argument("--resume", action="store_true", help="断点续训 continue exactly from the checkpoint in --out")
    g.add_argument("--compile", action="store_true", help="用 torch.compile 编译模型 compile the model")
    g.add_argument("--quick", action="store_true", help="冒烟测试 seconds-long smoke run (makes missing inputs)")
    unknown = set(defaults) - {a.dest for a in g._group_actions}
    if unknown:
        raise ValueError(f"course_parser got defaults for unknown flags: {sorted(unknown)}")
    p.set_defaults(**defaults)
    return p


def run(main) -> None:
    """Call main(); a CourseError (or a GPU out-of-memory) becomes one line on stderr and exit status 2."""
    import torch  # imported here so `--help` of a script stays fast

    try:
        main()
    except CourseError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except torch.cuda.OutOfMemoryError:
        print("error: the GPU ran out of memory; lower --batch-size (and raise --grad-accum to keep the "
              "global batch), shorten the context, or pick a smaller --size", file=sys.stderr)
        sys.exit(2)
