#!/usr/bin/env bash
# SpokenCOCO (Hsu et al. 2021) with SpeechCLIP / SpeechCLIP+ on the Karpathy split of MSCOCO 2014
# (train+restval 113,287 / val 5,000 / test 5,000 images; DESIGN §5 stages).
#
# Corpus layout (set SPOKENCOCO and MSCOCO in db.sh):
#   ${SPOKENCOCO}/SpokenCOCO_{train,val}.json   SpokenCOCO.tar.gz: groups.csail.mit.edu/sls/downloads/placesaudio/
#   ${SPOKENCOCO}/wavs/{train,val}/<n>/<uttid>.wav
#   ${MSCOCO}/train2014/*.jpg, val2014/*.jpg      images.cocodataset.org/zips/{train2014,val2014}.zip
#   ${MSCOCO}/dataset_coco.json                   Karpathy split, in
#                                                 cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip
#
#   ./run.sh                                                      # Parallel large: HuBERT large + ViT-L/14
#   ./run.sh --train_config conf/tuning/train_cascaded_large.yaml
# Offline: set clip_conf.pretrained (or --clip_pretrained) to a local OpenAI/open_clip .pt and the
# config's upstream_conf to {name: hubert_local, path_or_url: <s3prl converted .pt>}; a missing file
# stops the run before stage 1 with the file to fetch.
set -e -u -o pipefail

train_config=conf/train.yaml

. ./path.sh
# The pretrained weights are checked once, before any work; stages 3-5 use the config's CLIP.
clip_args=()
case " $* " in
    *" --help "* | *" -h "*) ;;
    *) line=$(python3 -m espnet_speechclip.bin.check_pretrained --train_config "${train_config}" "$@" | tail -n 1)
       eval "clip_args=(${line})" ;;
esac

./speechclip.sh \
    --train_set train --valid_set dev --test_sets test \
    --train_config "${train_config}" "${clip_args[@]}" \
    --max_sec 30 --nj 8 \
    "$@"
