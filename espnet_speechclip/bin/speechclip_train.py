#!/usr/bin/env python3
"""Train a SpeechCLIP / SpeechCLIP+ model with ESPnet's trainer (checkpoints, resume, DDP, logging).

Example (what stage 4 of egs2/TEMPLATE/speechclip1/speechclip.sh runs):
    python -m espnet_speechclip.bin.speechclip_train --config conf/train_hybrid_plus.yaml \\
        --train_data_path_and_name_and_type dump/train/wav.scp,speech,sound \\
        --train_data_path_and_name_and_type dump/train/image_feats.scp,image_feats,npy \\
        --valid_data_path_and_name_and_type ... --train_shape_file ... --output_dir exp/hybrid_plus
"""
from espnet_speechclip.tasks.speechclip import SpeechCLIPTask


def get_parser():
    return SpeechCLIPTask.get_parser()


def main(cmd=None):
    SpeechCLIPTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
