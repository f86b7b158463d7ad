#!/usr/bin/env bash
# Stage 1 of Flickr8k: validated Kaldi-style dirs data/{train,dev,test} from ${FLICKR8K} (db.sh).
# The expected layout is in run.sh; every missing or unmatched file is listed by name in
# data/<split>/problems.txt (data/problems.txt when it belongs to no split) and the log.
# Usage: local/data.sh [--max_drop_share 0.1] [--num_train 6000 --num_dev 1000 --num_test 1000]
set -e -u -o pipefail
log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[0]##*/}) $*"; }
SECONDS=0
num_train=6000; num_dev=1000; num_test=1000   # the published split; smaller only for test corpora
captions_per_image=5
max_drop_share=0.1
help_message="Usage: $0 [--max_drop_share ${max_drop_share}] [--num_train N --num_dev N --num_test N] [--captions_per_image N]"
. ./db.sh
. utils/parse_options.sh

if [ -z "${FLICKR8K}" ] || [ ! -d "${FLICKR8K}" ]; then
    log "Error: FLICKR8K='${FLICKR8K}' (db.sh) is not a directory. Download Flickr8k_Dataset.zip and" \
        "Flickr8k_text.zip (github.com/jbrownlee/Datasets/releases) and flickr_audio.tar.gz" \
        "(groups.csail.mit.edu/sls/downloads/flickraudio/), unpack them into one directory (layout in" \
        "run.sh) and set FLICKR8K to it in db.sh."
    exit 1
fi
log "preparing Flickr8k from ${FLICKR8K}"
python3 -m espnet_speechclip.bin.prepare_flickr8k --corpus_dir "${FLICKR8K}" --data_dir data \
    --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" \
    --captions_per_image "${captions_per_image}" --max_drop_share "${max_drop_share}"
log "successfully finished in ${SECONDS} s"
