#!/bin/bash
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap); it waits for /healthz.
# --factory: uvicorn calls create_app(), which reads the environment and fails naming a missing variable.
export PYTHONPATH="$LAMBDA_TASK_ROOT:${PYTHONPATH:-}"
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-8000}" --no-access-log --factory stream.app:create_app
