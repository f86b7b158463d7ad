#!/usr/bin/env bash
# Stage 1 of SpokenCOCO: validated Kaldi-style dirs data/{train,dev,test} on the Karpathy split,
# from ${SPOKENCOCO} and ${MSCOCO} (db.sh; layout in run.sh). Every missing image or wav, and every
# entry whose image is in no split, is listed by name in data/<split>/problems.txt
# (data/problems.txt when it belongs to no split) and the log.
# Usage: local/data.sh [--karpathy_split ${MSCOCO}/dataset_coco.json] [--max_drop_share 0.1]
set -e -u -o pipefail
log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${BASH_SOURCE[0]##*/}) $*"; }
SECONDS=0
karpathy_split=""                                 # default: ${MSCOCO}/dataset_coco.json
num_train=113287; num_dev=5000; num_test=5000     # the Karpathy split; smaller only for test corpora
max_drop_share=0.1
help_message="Usage: $0 [--karpathy_split FILE] [--max_drop_share ${max_drop_share}] [--num_train N --num_dev N --num_test N]"
. ./db.sh
. utils/parse_options.sh

if [ -z "${SPOKENCOCO}" ] || [ ! -d "${SPOKENCOCO}" ]; then
    log "Error: SPOKENCOCO='${SPOKENCOCO}' (db.sh) is not a directory. Download SpokenCOCO.tar.gz" \
        "(groups.csail.mit.edu/sls/downloads/placesaudio/), unpack it and set SPOKENCOCO to the" \
        "directory holding SpokenCOCO_train.json in db.sh."
    exit 1
fi
if [ -z "${MSCOCO}" ] || [ ! -d "${MSCOCO}" ]; then
    log "Error: MSCOCO='${MSCOCO}' (db.sh) is not a directory. Download the MSCOCO 2014 images" \
        "(images.cocodataset.org/zips/train2014.zip, val2014.zip) and Karpathy's dataset_coco.json" \
        "(cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip), put train2014/," \
        "val2014/ and dataset_coco.json in one directory and set MSCOCO to it in db.sh."
    exit 1
fi
[ -z "${karpathy_split}" ] && karpathy_split="${MSCOCO}/dataset_coco.json"
log "preparing SpokenCOCO from ${SPOKENCOCO} and ${MSCOCO} (Karpathy split ${karpathy_split})"
python3 -m espnet_speechclip.bin.prepare_spokencoco --spokencoco_dir "${SPOKENCOCO}" --mscoco_dir "${MSCOCO}" \
    --karpathy_split "${karpathy_split}" --data_dir data \
    --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" --max_drop_share "${max_drop_share}"
log "successfully finished in ${SECONDS} s"
