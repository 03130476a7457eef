#!/usr/bin/env bash
# Train the nested MiniLM variants (results/training) on a lent GPU machine, all at once, and bring back
# their Cranfield tables and the Starbucks model (float16 weights, split into 15 MB parts).
#
# Prepared here (not committed: .dev/ is ignored), then carried to the device machine:
#   .dev/minilm/   all-MiniLM-L6-v2 with model.fp16.safetensors (float16 to fit the 64 MiB carry;
#                  widened back to float32 there, a round trip that moves weights by ~1e-3 relative)
#   .dev/data/     cranfield/, train/scifact-train-pairs.jsonl, train/debian-pairs.jsonl.gz
#   .dev/whl/      sentence-transformers 6.2.0, datasets, dill, multiprocess, pytrec-eval-terrier
# The Matryoshka runs replay the CPU step counts measured here (batch 32, seq 64: about 0.92
# steps/s with every layer trained, 1.85 steps/s with the bottom 3 frozen, so 27 minutes gives
# ~1,400 / ~2,800 steps) to choose the configuration for the CPU run.
# Everything is written under a fresh temp folder ($WORK); the results come back in $OUT.
set -euo pipefail
export WORK=${WORK:-$(mktemp -d)}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $WORK/site .dev/whl/*.whl
export PYTHONPATH=$WORK/site:$PWD FUNNEL_DATA=$WORK/data HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
OUT=${OUT:-$WORK/out}
mkdir -p $WORK/data/train $WORK/models "$OUT"
cp -r .dev/data/cranfield $WORK/data/
cp .dev/data/train/scifact-train-pairs.jsonl $WORK/data/train/
gunzip -c .dev/data/train/debian-pairs.jsonl.gz > $WORK/data/train/debian-pairs.jsonl
cp -r .dev/minilm $WORK/minilm
python3 - <<'EOF'
from safetensors.torch import load_file, save_file
import os
work = os.environ["WORK"]
weights = load_file(f"{work}/minilm/model.fp16.safetensors")
save_file({k: v.float() for k, v in weights.items()}, f"{work}/minilm/model.safetensors")
EOF
rm $WORK/minilm/model.fp16.safetensors
nvidia-smi -L

train() {  # TAG ARGS...
    local tag=$1; shift
    timeout ${PER_RUN:-470} python3 -m benchmarks.train_nested --tag "$tag" --model $WORK/minilm --models-dir $WORK/models \
        --seq-len 64 --batch-size 32 "$@" > "$WORK/$tag.log" 2>&1 || echo "$tag failed: $(tail -3 "$WORK/$tag.log")"
}
GRID=$(python3 -c "print(','.join(f'{l}:{d}' for l in range(1, 7) for d in (16, 32, 64, 128, 256, 384)))")
M="--scheme matryoshka --dims 384,256,128,64,32"
case "${1:-contrastive}" in
contrastive)  # round 1: MNRL on the training pairs
train gpu-m-all-lr1e-4 $M --dim-weights 1,1,1,2,2 --lr 1e-4 --max-steps 1400 &
train gpu-m-all-lr1e-4-small4 $M --dim-weights 1,1,2,4,4 --lr 1e-4 --max-steps 1400 --no-base &
train gpu-m-frozen3-lr1e-4 $M --dim-weights 1,1,1,2,2 --lr 1e-4 --frozen-layers 3 --max-steps 2800 --no-base &
train gpu-m-frozen3-lr2e-4-small4 $M --dim-weights 1,1,2,4,4 --lr 2e-4 --frozen-layers 3 --max-steps 2800 --no-base &
train gpu-starbucks --scheme starbucks --lr 1e-4 --max-steps 2000 --grid "$GRID" &
train gpu-2d --scheme 2d --dims 384,256,128,64,32,16 --lr 1e-4 --max-steps 2000 --no-base --grid "$GRID" &
;;
distill)  # round 2: similarity distillation from the starting model (loss "distill")
STARBUCKS=gpu-starbucks-distill
train gpu-d-all-lr1e-4 $M --loss distill --lr 1e-4 --max-steps 1200 &
train gpu-d-all-lr5e-5 $M --loss distill --lr 5e-5 --max-steps 1200 --no-base &
train gpu-d-all-lr1e-4-2400 $M --loss distill --lr 1e-4 --max-steps 2400 --no-base &
train gpu-d-frozen3-lr2e-4 $M --loss distill --lr 2e-4 --frozen-layers 3 --max-steps 2000 --no-base &
train gpu-starbucks-distill --scheme starbucks --loss distill --lr 1e-4 --max-steps 2000 --no-base --grid "$GRID" &
train gpu-2d-distill --scheme 2d --dims 384,256,128,64,32,16 --loss distill --lr 1e-4 --max-steps 2000 --no-base --grid "$GRID" &
;;
esac
wait

[ "${1:-contrastive}" = contrastive ] && python3 - <<'EOF'
import time, torch
from sentence_transformers import SentenceTransformer
import os
from pathlib import Path
from funnel.readers import document_text, read_corpus
work = os.environ["WORK"]
_, titles, bodies, _ = read_corpus(Path(f"{work}/data/cranfield/corpus.jsonl"))
texts = [document_text(title, body) for title, body in zip(titles, bodies)] * 8
for dtype in (torch.float32, torch.float16):
    model = SentenceTransformer(f"{work}/minilm", device="cuda").to(dtype)
    model.encode(texts[:512], batch_size=256)
    torch.cuda.synchronize(); start = time.perf_counter()
    model.encode(texts, batch_size=256)
    torch.cuda.synchronize()
    print(f"CUDA encode {dtype}: {len(texts) / (time.perf_counter() - start):.0f} passages/s over {len(texts)} Cranfield passages")
EOF

for f in "$WORK"/*.log; do echo "== $f"; tail -4 "$f"; done
tar -czf "$OUT/results.tgz" -C benchmarks/results/training $(cd benchmarks/results/training && ls gpu-*) -C "$WORK" $(cd "$WORK" && ls *.log)
export STARBUCKS=${STARBUCKS:-gpu-starbucks}
if [ -d $WORK/models/$STARBUCKS ]; then
    python3 - <<'EOF'
from safetensors.torch import load_file, save_file
import os
work = os.environ["WORK"]
weights = load_file(f"{work}/models/{os.environ['STARBUCKS']}/model.safetensors")
save_file({k: v.half() for k, v in weights.items()}, f"{work}/starbucks.fp16.safetensors")
EOF
    tar -czf "$OUT/starbucks-config.tgz" -C $WORK/models/$STARBUCKS --exclude model.safetensors .
    split -b 15M -d $WORK/starbucks.fp16.safetensors "$OUT/starbucks.fp16.part"
fi
ls -la "$OUT"
