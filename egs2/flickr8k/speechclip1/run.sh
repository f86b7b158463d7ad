#!/usr/bin/env bash
# Flickr8k Audio Captions with SpeechCLIP / SpeechCLIP+ (DESIGN §5 stages; Shih et al. 2022, Wang et al. 2024).
#
# Corpus layout under ${FLICKR8K} (set it in db.sh):
#   Flicker8k_Dataset/<image>.jpg           Flickr8k_Dataset.zip  } Hodosh et al. 2013; mirror:
#   Flickr_8k.{train,dev,test}Images.txt    Flickr8k_text.zip     } github.com/jbrownlee/Datasets/releases
#   Flickr8k.token.txt                      Flickr8k_text.zip     }
#   flickr_audio/wavs/<image>_<n>.wav       flickr_audio.tar.gz: Harwath & Glass 2015,
#   flickr_audio/wav2capt.txt, wav2spk.txt  groups.csail.mit.edu/sls/downloads/flickraudio/
#
#   ./run.sh                                                      # Parallel base: HuBERT base + ViT-B/32
#   ./run.sh --train_config conf/tuning/train_hybrid_plus_large.yaml
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
    --max_sec 30 --nj 4 \
    "$@"
