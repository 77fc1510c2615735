"""Extensions that make moto 5.2.5 behave as AWS documents where opsd depends on it.

Each module patches moto's classes in place when imported; `apply()` imports them all. They touch moto
internals, which is why scripts/requirements-sandbox.txt pins the version. scripts/test_moto_ext.py
drives every extension with boto3.
"""


def apply() -> None:
    from . import ec2_tags, ecs, eni, lifecycle  # noqa: F401  (importing applies the patches)
