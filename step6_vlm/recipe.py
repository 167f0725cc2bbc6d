"""Step 6's recipe: every choice that decides what a run on the data world learns, in one place. train.py reads
it (its flags override single fields), and the lab's ablations vary it with `dataclasses.replace(RECIPE, ...)`."""
import ast
from dataclasses import asdict, dataclass, fields, is_dataclass, replace

from common.errors import CourseError

from step6_vlm.data import CURRICULUM, OFFWORLD_TRAIN, PAINT_SHARE
from step6_vlm.model import DEFAULT_LAST_N, DEFAULT_STAGE1_LLM


@dataclass(frozen=True)
class StagePlan:
    steps: int
    batch: int
    lr: float        # the LLM's peak learning rate (warmup, then cosine)
    proj_lr: float   # the projection's (and image positions') peak learning rate


@dataclass(frozen=True)
class Recipe:
    # the data world's pictures: training, held-out (same combinations), held-out combinations
    images: int = 8000
    eval_images: int = 400
    combo_images: int = 300
    # stage 1 (image → caption) and stage 2 (image + question → answer)
    pretrain: StagePlan = StagePlan(steps=1200, batch=32, lr=1e-3, proj_lr=2e-3)
    sft: StagePlan = StagePlan(steps=2500, batch=32, lr=1e-3, proj_lr=1e-3)
    stage1_llm: str = DEFAULT_STAGE1_LLM   # what of the LLM stage 1 trains (model.STAGE1_LLM_CHOICES)
    last_n: int = DEFAULT_LAST_N           # with stage1_llm="last_n": how many top blocks
    curriculum: tuple = CURRICULUM         # stage 2's drills before the full mix (data.CURRICULUM)
    describe_p: float = 1.0                # stage 2, every phase: chance that a picture is also to be described
    paint_share: float = PAINT_SHARE       # stage 2: share of pictures repainted in off-world paints
    offworld: int = OFFWORLD_TRAIN         # stage 2: pictures from outside the world, answered "I don't know"
    # the connector (model.VLMConfig)
    projector: str = "linear"
    image_positions: str = "learned"
    layout: str = "question-first"
    feature_layer: int = -2

    def check(self) -> "Recipe":
        """The recipe, or one sentence on the first field that cannot work."""
        from step6_vlm.model import STAGE1_LLM_CHOICES
        for name in ("describe_p", "paint_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise CourseError(f"--recipe {name} is a share: give a number from 0 to 1, not {getattr(self, name)}")
        if self.stage1_llm not in STAGE1_LLM_CHOICES:
            raise CourseError(f"--recipe stage1_llm={self.stage1_llm!r}: choose one of {', '.join(STAGE1_LLM_CHOICES)}")
        if self.offworld < 0:
            raise CourseError(f"--recipe offworld is a number of pictures: 0 or more, not {self.offworld}")
        for stage in ("pretrain", "sft"):
            p = self.plan(stage)
            if p.steps < 1 or p.batch < 1 or p.lr <= 0 or p.proj_lr <= 0:
                raise CourseError(f"--recipe {stage}: steps and batch must be ≥ 1 and learning rates > 0, not {p}")
        return self

    def plan(self, stage: str) -> StagePlan:
        return getattr(self, stage)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_field(self, item: str) -> "Recipe":
        """`"describe_p=0.5"` or `"sft.steps=1000"` → a copy with that field changed (the value in its type)."""
        key, eq, value = item.partition("=")
        path = key.strip().split(".")
        where = self if len(path) == 1 else getattr(self, path[0], None)
        if not eq or where is None or not is_dataclass(where) or path[-1] not in {f.name for f in fields(where)}:
            raise CourseError(f"--recipe {item!r}: give FIELD=VALUE with a field of the recipe: "
                              f"{', '.join(f.name for f in fields(self))} (stage plans: pretrain.steps, sft.lr, ...)")
        old = getattr(where, path[-1])
        try:
            new = type(old)(value) if not isinstance(old, tuple) else ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise CourseError(f"--recipe {item!r}: {value!r} is not a {type(old).__name__}") from None
        changed = replace(where, **{path[-1]: new})
        return changed if len(path) == 1 else replace(self, **{path[0]: changed})


RECIPE = Recipe()
# seconds-long smoke runs (--quick, the tests): tiny splits, a dozen steps per stage
QUICK = replace(RECIPE, images=300, eval_images=40, combo_images=30, offworld=20,
                pretrain=StagePlan(steps=12, batch=8, lr=1e-3, proj_lr=2e-3),
                sft=StagePlan(steps=12, batch=8, lr=1e-3, proj_lr=1e-3))
