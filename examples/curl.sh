#!/usr/bin/env bash
# Every adam-api operation as a curl command, run one after the other against a running server.
#
#   npm run dev                                   # in another terminal
#   examples/curl.sh                              # against http://localhost:8787
#   ADAM_API=https://adam-api.example.workers.dev examples/curl.sh
#
# Needs only bash, curl and sed. Each step prints its curl command (paste it to try it yourself),
# the response body and its HTTP status, and the script stops with an error at the first status it
# did not expect. SVG charts and other large answers go to files in $OUT_DIR (a new temporary
# directory unless set).
set -euo pipefail

API="${ADAM_API:-http://localhost:8787}"
API="${API%/}"
OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/adam-api-curl.XXXXXX")}"
mkdir -p "$OUT_DIR"
JSON='content-type: application/json'

# Quote an argument for display only when the shell needs it, so printed commands can be pasted.
show_arg() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then
    printf ' %s' "$1"
  else
    printf " '%s'" "${1//\'/\'\\\'\'}"
  fi
}

# call EXPECTED_STATUS "what it does" CURL_ARGS...
# Prints the command, the body (long bodies cut at 1500 characters) and the status; sets BODY.
# Fails unless the status is EXPECTED_STATUS.
call() {
  local want=$1 what=$2
  shift 2
  printf '\n== %s\n$ curl' "$what"
  for arg in "$@"; do show_arg "$arg"; done
  printf '\n'
  local out status
  out=$(curl -sS -w '\n%{http_code}' "$@")
  status=${out##*$'\n'}
  BODY=${out%$'\n'*}
  if ((${#BODY} > 1500)); then
    printf '%s… (%d characters)\n' "${BODY:0:1500}" "${#BODY}"
  elif [[ -n $BODY ]]; then
    printf '%s\n' "$BODY"
  fi
  printf -- '-> HTTP %s\n' "$status"
  if [[ $status != "$want" ]]; then
    printf 'FAILED: %s: expected HTTP %s, got %s\n' "$what" "$want" "$status" >&2
    exit 1
  fi
}

# saved FILE: prints where a response body went and its size, and checks it is an SVG when it should be.
saved() {
  printf '   saved %s (%d bytes)\n' "$1" "$(wc -c <"$1")"
  if [[ $1 == *.svg ]] && ! grep -q '<svg' "$1"; then
    echo "FAILED: $1 is not an SVG" >&2
    exit 1
  fi
}

# json_string KEY: the value of the first "KEY":"..." in $BODY.
json_string() {
  sed -n "/\"$1\":\"/{s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p;q;}" <<<"$BODY"
}

# header NAME: the value of response header NAME in $BODY (from a call made with -i).
header() {
  sed -n "s/^$1: *\\(.*[^[:space:]]\\)[[:space:]]*\$/\\1/Ip" <<<"$BODY" | head -n 1
}

echo "adam-api at $API (files in $OUT_DIR)"

# --- Service -------------------------------------------------------------------------------------
call 200 "service info and links" "$API/"
call 200 "health" "$API/healthz"
call 200 "the OpenAPI 3.1 document (JSON)" -o "$OUT_DIR/openapi.json" "$API/openapi.json"
saved "$OUT_DIR/openapi.json"

# --- Stateless steps: you keep the state ---------------------------------------------------------
call 200 "one Adam step (fresh state)" "$API/v1/adam/step" -H "$JSON" -d '{
  "params": [1.0, -2.0, 3.0],
  "grads":  [0.1, -0.2, 0.3],
  "hyperparams": {"lr": 0.01},
  "dtype": "float64"
}'
# The answer is {"params": ..., "state": ..., "lr": ...}: drop "lr", add the next gradients and send
# it back to continue the same trajectory.
NEXT=$(sed -E 's/"lr":[^,}]*//; s/,,/,/; s/\{,/{/; s/,\}$/}/; s/\}$/,"grads":[0.1,-0.2,0.3],"hyperparams":{"lr":0.01},"dtype":"float64"}/' <<<"$BODY")
call 200 "second step, fed back the returned params and state" "$API/v1/adam/step" -H "$JSON" -d "$NEXT"

call 200 "AdamW with named tensors (a state_dict-like object)" "$API/v1/adam/step" -H "$JSON" -d '{
  "params": {"fc.weight": [[0.5, -0.5], [0.25, 1.0]], "fc.bias": [0.0, 0.1]},
  "grads":  {"fc.weight": [[0.1, 0.2], [-0.3, 0.4]], "fc.bias": [0.05, -0.05]},
  "hyperparams": {"lr": 0.001, "weight_decay": 0.01, "decoupled_weight_decay": true}
}'

call 422 "an invalid request: a problem+json answer naming the field" "$API/v1/adam/step" -H "$JSON" \
  -d '{"params": [1.0], "grads": [0.1], "hyperparams": {"lr": -1}}'

# --- Learning-rate schedules ---------------------------------------------------------------------
call 200 "evaluate a cosine schedule at steps 0, 50, 100" "$API/v1/schedules/evaluate" -H "$JSON" \
  -d '{"schedule": {"type": "cosine", "lr": 0.1, "total_steps": 100}, "steps": [0, 50, 100]}'
call 200 "the same schedule as a GET with query parameters" "$API/v1/schedules/cosine?lr=0.1&total_steps=100&steps=0,50,100"
call 200 "multistep schedule, GET form with a range of steps" "$API/v1/schedules/multistep?lr=0.1&milestones=30,80&steps=0:100:10"
call 200 "plot a one-cycle schedule (SVG)" -o "$OUT_DIR/one_cycle.svg" "$API/v1/schedules/plot" -H "$JSON" \
  -d '{"schedule": {"type": "one_cycle", "max_lr": 0.1, "total_steps": 1000}, "steps": {"start": 0, "stop": 1000}, "log_scale": true}'
saved "$OUT_DIR/one_cycle.svg"
call 200 "plot a cosine schedule, GET form (SVG)" -o "$OUT_DIR/cosine.svg" "$API/v1/schedules/cosine/plot?lr=0.1&total_steps=100"
saved "$OUT_DIR/cosine.svg"

# --- Hosted optimizer: the service keeps the state -----------------------------------------------
call 201 "create a hosted optimizer (the token is shown only once)" -i "$API/v1/optimizers" -H "$JSON" -d '{
  "params": {"w": [0.0, 0.0], "b": 0.0},
  "hyperparams": {"lr": 0.1}
}'
ID=$(json_string id)
TOKEN=$(json_string token)
if [[ -z $ID || -z $TOKEN ]]; then
  echo "FAILED: no id or token in the create response" >&2
  exit 1
fi
echo "   id=$ID"
AUTH="authorization: Bearer $TOKEN"
OPT="$API/v1/optimizers/$ID"

GRADS='{"grads": {"w": [0.5, -0.25], "b": 0.1}, "loss": 0.75}'
call 200 "step with an Idempotency-Key" -i "$OPT/step" -H "$AUTH" -H "$JSON" -H 'idempotency-key: step-0001' -d "$GRADS"
ETAG=$(header etag)   # the state version after this step
echo "   ETag=$ETAG"
call 200 "retry with the same key: replayed, not applied twice" -i "$OPT/step" -H "$AUTH" -H "$JSON" -H 'idempotency-key: step-0001' -d "$GRADS"
call 200 "a second step, only if the optimizer is still at step 1 (If-Match)" "$OPT/step" -H "$AUTH" -H "$JSON" \
  -H "if-match: $ETAG" -d '{"grads": {"w": [0.25, -0.125], "b": 0.05}, "loss": 0.5}'
call 200 "current params" "$OPT/params" -H "$AUTH"
call 200 "metadata: step, hyperparameters, next lr, shapes" "$OPT" -H "$AUTH"
call 200 "full snapshot: params, moments, hyperparameters" -o "$OUT_DIR/state.json" "$OPT/state" -H "$AUTH"
saved "$OUT_DIR/state.json"
call 200 "restore the snapshot (PUT it back)" -X PUT "$OPT/state" -H "$AUTH" -H "$JSON" --data-binary "@$OUT_DIR/state.json"
call 200 "change the learning rate" -X PATCH "$OPT" -H "$AUTH" -H "$JSON" -d '{"hyperparams": {"lr": 0.05}}'
call 200 "loss and learning rate per step" "$OPT/history" -H "$AUTH"
call 200 "history as an SVG chart" -o "$OUT_DIR/history.svg" "$OPT/history/plot" -H "$AUTH"
saved "$OUT_DIR/history.svg"
call 401 "a wrong token is refused" "$OPT/params" -H 'authorization: Bearer not-the-token'
call 204 "delete the optimizer" -X DELETE "$OPT" -H "$AUTH"
call 404 "it is gone" "$OPT" -H "$AUTH"

echo
echo "All calls answered as expected."
