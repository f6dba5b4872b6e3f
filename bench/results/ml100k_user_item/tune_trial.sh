#!/bin/bash
# HISTORICAL (the hand-tuning rounds of tuning_log.md): superseded by `recsys-ssl tune`. Since then the
# -val carve-out is the project-wide 10% rule (it was the last 20% of each user's train part), so
# these trials' numbers no longer reproduce exactly.
# One tuning trial on the VALIDATION carve-out (movielens/100k-user-item-val; never the test split).
# usage: tune_trial.sh NAME CONFIG REGIME [--set k=v ...]   (seed 0; SEEDS="0 1 2" for more)
# item -> item: VAL_RUN=runs/ml100k_ii_val ... --set dataset=movielens/100k-item-item-val (a later --set wins)
# Needs $VAL_RUN/{tfds,stats,mi} (default runs/ml100k_val; see README.md here); prints one line of validation metrics.
cd "$(dirname "$0")/../../.."  # the repository root
NAME=$1; CONFIG=$2; REGIME=$3; shift 3
R=runs/tune/$NAME
mkdir -p $R
VAL_RUN=$(realpath "${VAL_RUN:-runs/ml100k_val}")
for a in stats mi tfds; do [ -e $R/$a ] || ln -s "$VAL_RUN/$a" $R/$a; done
start=$(date +%s)
.venv/bin/recsys-ssl experiment --run-dir $R --name val --configs $CONFIG --seeds ${SEEDS:-0} --regimes $REGIME \
  --set dataset=movielens/100k-user-item-val --data-dir ${DATA_DIR:-../shared/data} --no-plots --quiet --baseline $CONFIG "$@" > $R/log.txt 2>&1
rc=$?
.venv/bin/python - "$R" "$NAME" "$rc" "$(( $(date +%s) - start ))" "$*" <<'PY'
import json, sys, glob
r, name, rc, secs, sets = sys.argv[1:]
for f in sorted(glob.glob(f"{r}/eval/*/metrics.json")):
    m = json.load(open(f))
    s = m["slices"]
    print(f"{name:28s} rc={rc} {secs:>4}s R@10 {m['recall@10']:.4f} R@50 {m['recall@50']:.4f} head@50 {s['head']['recall@50']:.4f} tail@50 {s['tail']['recall@50']:.4f} tail@10 {s['tail']['recall@10']:.4f} | {sets} | {f.split('/')[-2]}")
PY
