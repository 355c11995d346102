#!/bin/bash
# One container, one confidential VM, one GPU: vLLM on loopback and
# teegate-worker beside it. A Kata GPU pod passes the GPU to the container
# that asks for it, and both need it (vLLM to compute, the worker for the
# GPU's attestation report), so both run here. Arguments go to
# teegate-worker; vLLM is configured by VLLM_MODEL (required),
# VLLM_SERVED_MODEL_NAME (the model id clients send; default VLLM_MODEL),
# VLLM_PORT (default 8000; --engine-url must name it) and VLLM_EXTRA_ARGS.
# When either process exits the other is stopped and the container exits
# with the first one's status, so the orchestrator restarts both.
set -euo pipefail

: "${VLLM_MODEL:?set VLLM_MODEL to the model to serve}"
VLLM_SERVED_MODEL_NAME="${VLLM_SERVED_MODEL_NAME:-$VLLM_MODEL}"
VLLM_PORT="${VLLM_PORT:-8000}"

# shellcheck disable=SC2086 # VLLM_EXTRA_ARGS is a list of words
vllm serve "$VLLM_MODEL" --served-model-name "$VLLM_SERVED_MODEL_NAME" \
  --host 127.0.0.1 --port "$VLLM_PORT" ${VLLM_EXTRA_ARGS:-} &
vllm_pid=$!
teegate-worker "$@" &
worker_pid=$!

stop() { kill -TERM "$worker_pid" "$vllm_pid" 2>/dev/null || true; }
trap stop TERM INT
status=0
wait -n "$vllm_pid" "$worker_pid" || status=$?
stop
wait || true
exit "$status"
