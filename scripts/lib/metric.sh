# shellcheck shell=bash
# Sourced by test scripts: `metric_sum URL NAME` prints the sum of metric NAME's samples
# (every label set) in URL/metrics, as a whole number (the tests read counts and gauges of
# requests and blocks).
metric_sum() {
    curl -fsS -m 5 "$1/metrics" |
        awk -v m="$2" '$1 !~ /^#/ { n = $1; sub(/\{.*/, "", n); if (n == m) s += $NF } END { printf "%.0f\n", s }'
}
