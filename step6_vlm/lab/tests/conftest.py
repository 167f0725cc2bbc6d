"""The lab's tests use the lesson tests' tiny tokenizer."""
from step6_vlm.tests.conftest import tok  # noqa: F401  (a pytest fixture, found by name)
