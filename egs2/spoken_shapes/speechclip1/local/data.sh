#!/usr/bin/env bash
# Stage 1 of SpokenShapes: generate the corpus into downloads/ and the data dirs into data/.
# Usage: local/data.sh [--small true] [--seed 0] [--nj 2] [--num_train 3000] [--num_dev_unseen 150]
#                      [--train_captions_per_image 2]
set -e -u -o pipefail
log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[0]##*/}) $*"; }
SECONDS=0
small=false
seed=0
nj=2
num_train=3000              # train images (dev: 150; --small overrides all the sizes)
num_test=250                # test images; more narrow the bootstrap intervals of stage 5
num_dev_unseen=150          # dev_unseen images: voices in neither train nor test (0: no such split)
train_captions_per_image=2   # spoken captions per train image (dev and test: 2), each another voice
help_message="Usage: $0 [--small true|false] [--seed N] [--nj N] [--num_train N] [--num_test N] [--num_dev_unseen N] [--train_captions_per_image N]"
. utils/parse_options.sh

opts=(--corpus_dir downloads/spoken_shapes --data_dir data --seed "${seed}" --nj "${nj}"
      --num_train "${num_train}" --num_test "${num_test}" --num_dev_unseen "${num_dev_unseen}"
      --train_captions_per_image "${train_captions_per_image}")
[ "${small}" = true ] && opts+=(--small)
log "generating SpokenShapes (small=${small}, seed=${seed})"
python3 -m espnet_speechclip.bin.prepare_spoken_shapes "${opts[@]}"
log "successfully finished in ${SECONDS} s"
