"""The official anthropic Python SDK against the running `business2api` binary.

Runs twice (./scripts/test.sh): with anthropic 2.x in .venv (`SDK_VARIANT=current`, the key as
`Authorization: Bearer`) and with anthropic 0.69 in .venv-legacy (`SDK_VARIANT=legacy`, the key
as `x-api-key`). To be written with the Anthropic dialect.
"""
