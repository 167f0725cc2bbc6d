"""The command-line flags every step shares, and the guard that turns user errors into one line."""
import argparse
import sys

from common.errors import CourseError


# The shared flags: name → (argparse keyword arguments). Every script offers the ones it honours, under these
# names and with these meanings, and no others: a flag a script would ignore is refused by argparse.
SHARED_FLAGS = {
    "device": dict(default="auto", help="设备 device: auto (cuda > mps > cpu), cpu, cuda, mps"),
    "dtype": dict(default="auto", help="计算精度 compute dtype: auto (bf16 on GPU), float32, bfloat16"),
    "epochs": dict(type=float, default=None, help="训练轮数 passes over the training data"),
    "max_steps": dict(type=int, default=None, help="最多优化步数 stop after this many optimizer steps"),
    "batch_size": dict(type=int, default=None, help="批大小 sequences per optimizer step (per process)"),
    "lr": dict(type=float, default=None, help="峰值学习率 peak learning rate"),
    "seed": dict(type=int, default=1337, help="随机种子 seed for data, init and sampling"),
    "size": dict(default=None, help="模型规模 model preset (tiny, small, base)"),
    "data": dict(default=None, nargs="*", help="数据 data files/folders instead of the built-in world"),
    "out": dict(default=None, help="输出目录 the checkpoint folder this run writes (with its metrics and plots)"),
    "init": dict(default=None, help="初始权重 checkpoint folder to start from"),
    "resume": dict(action="store_true", help="断点续训 continue exactly from the checkpoint in --out"),
    "compile": dict(action="store_true", help="用 torch.compile 编译模型 compile the model"),
    "quick": dict(action="store_true", help="冒烟测试 seconds-long smoke run (makes missing inputs)"),
}


def course_parser(description: str, *flags: str, **defaults) -> argparse.ArgumentParser:
    """An ArgumentParser with the shared flags this script honours, e.g.
    course_parser("...", "device", "seed", "out", "quick", out="runs/tokenizer"). Keyword arguments override
    a flag's default for this script. Steps add their own flags afterwards."""
    unknown = [f for f in flags if f not in SHARED_FLAGS]
    if unknown:
        raise ValueError(f"course_parser: {unknown} are not shared flags; choose from {sorted(SHARED_FLAGS)}")
    not_offered = set(defaults) - set(flags)
    if not_offered:
        raise ValueError(f"course_parser got defaults for flags it does not offer: {sorted(not_offered)}")
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if flags:
        g = p.add_argument_group("shared course flags")
        for name in sorted(flags, key=list(SHARED_FLAGS).index):  # always in the same order
            g.add_argument("--" + name.replace("_", "-"), **SHARED_FLAGS[name])
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


def demo_parser(description: str) -> argparse.ArgumentParser:
    """The parser of every step's `model.py`: `python model.py --demo` runs the demo; without --demo the
    help is printed (see `wants_demo`). Steps may add options the demo reads (e.g. --text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--demo", action="store_true", help="演示 run the demo of this file")
    return p


def wants_demo(parser: argparse.ArgumentParser):
    """Parsed arguments when --demo was given; else print the help and return None."""
    args = parser.parse_args()
    if not args.demo:
        parser.print_help()
        return None
    return args
