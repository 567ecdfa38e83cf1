"""Reusable conformance checks for diffusers-style pipelines and models.

Our own versions of what diffusers' tester mixins verify (``PipelineTesterMixin`` and friends in
diffusers' ``tests/pipelines``, ``ModelTesterMixin`` in ``tests/models/testing_utils``), written as
plain functions over a small spec object so any test module can apply them to any pipeline or model:

- `checks.pipeline_checks`: `PipelineSpec` and `PIPELINE_CHECKS` (name → check function);
- `checks.model_checks`: `ModelSpec` and `MODEL_CHECKS` (name → check function).

Every check takes ``(spec, tmp_path)``, raises `AssertionError` naming what broke, and calls
`pytest.skip` only where the thing it checks does not apply (e.g. a model without gradient
checkpointing support is checked to refuse it instead).
"""
