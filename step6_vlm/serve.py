"""Serve a course model over HTTP (部署): a chat page, an OpenAI-compatible API and an upload endpoint.

    python serve.py                          # the newest VLM: runs/vlm_sft, else runs/vlm_pretrain
    python serve.py --init ../runs/sft       # any course checkpoint folder, relative to where you run this
                                             # (text-only GPTs serve text chat)
    python serve.py --port 8080 --host 0.0.0.0   # reachable from other machines (127.0.0.1 by default)

Then open http://127.0.0.1:8000/ , or
    curl -F image=@test.jpg -F prompt=描述这张图片 http://127.0.0.1:8000/v1/generate-multipart
It serves until Ctrl-C (no JSON line: a server, not a measurement).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from common.cli import course_parser, run
from common.device import pick_device, seed_everything
from common.errors import CourseError


def main():
    p = course_parser("Serve a course model: web page + OpenAI-compatible API (部署)", "device", "seed", "init")
    p.add_argument("--host", default="127.0.0.1", help="监听地址 address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="端口 port")
    args = p.parse_args()
    import uvicorn
    from step6_vlm.server import Engine, make_app, newest_checkpoint
    seed_everything(args.seed)
    path = pathlib.Path(args.init) if args.init else newest_checkpoint()
    if path is None:
        raise CourseError("no VLM in runs/vlm_sft or runs/vlm_pretrain; make one with: python step6_vlm/train.py "
                          "(or serve another checkpoint with --init FOLDER, e.g. --init runs/sft)")
    engine = Engine.load(path, pick_device(args.device))
    kind = "text + images" if engine.vision else "text only"
    print(f"serving {engine.name} ({kind}) on http://{args.host}:{args.port}/  (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(make_app(engine), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    run(main)
