# shellcheck shell=bash
# Sourced by the serving comparisons (llama-server.sh, vllm-http.sh): one server at a time
# on 127.0.0.1:$PORT, driven by `pagedattn bench serve --backend openai` with the default
# burst. Needs PORT, OUT, bin (the pagedattn binary) and i (the pair number) set.
#
#   peer_run NAME SECONDS COMMAND...   start COMMAND in its own process group, wait at most
#                                      SECONDS for /health, run the burst into
#                                      $OUT/NAME-$i.json (server log: $OUT/NAME-$i.log), stop
#   peer_stop                          SIGTERM to the server's group; SIGKILL after 30 s

server=""
peer_stop() {
  [ -n "$server" ] || return 0
  kill -TERM -- "-$server" 2>/dev/null || kill -TERM "$server" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server" 2>/dev/null; then
    echo "$(basename "$0"): server $server ignored SIGTERM for 30 s; killing it" >&2
  fi
  kill -KILL -- "-$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}
trap peer_stop EXIT

peer_run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name, pair ${i:?}"
  setsid "$@" >"$OUT/$name-$i.log" 2>&1 </dev/null &
  server=$!
  local deadline=$((SECONDS + limit)) up=0
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$server" 2>/dev/null || break
    if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null; then up=1; break; fi
    sleep 0.2
  done
  if [ "$up" = 1 ]; then
    "${bin:?}" bench serve --quiet --backend openai --url "http://127.0.0.1:$PORT" \
      --max-model-len 2048 --json "$OUT/$name-$i.json" ||
      echo "$(basename "$0"): the load generator failed against $name (see $OUT/$name-$i.log)" >&2
  else
    echo "$(basename "$0"): $name did not answer /health within $limit s (see $OUT/$name-$i.log)" >&2
  fi
  peer_stop
}
