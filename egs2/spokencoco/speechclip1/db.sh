# db.sh: where the corpora live (ESPnet convention). Set the paths here, in db.sh.local (not
# tracked by git), or in the environment; local/data.sh says what to download when one is missing.
FLICKR8K=${FLICKR8K:-}      # Flickr8k images + text + Flickr8k Audio Captions (see run.sh)
SPOKENCOCO=${SPOKENCOCO:-}  # SpokenCOCO: SpokenCOCO_{train,val}.json + wavs/
MSCOCO=${MSCOCO:-}          # MSCOCO 2014: train2014/ val2014/ + Karpathy's dataset_coco.json
if [ -f db.sh.local ]; then
    . ./db.sh.local
fi
