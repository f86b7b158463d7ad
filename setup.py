"""espnet_speechclip: SpeechCLIP / SpeechCLIP+ as an ESPnet task (pinned set: tools/requirements.txt)."""
from setuptools import find_packages, setup

setup(
    name="espnet_speechclip",
    version="0.1.0",
    packages=find_packages(include=["espnet_speechclip", "espnet_speechclip.*"]),
    package_data={"espnet_speechclip": ["templates/*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "espnet>=202511",
        "torch>=2.9",
        "torchaudio>=2.9",
        "s3prl==0.4.18",
        "open_clip_torch>=3.0",
        "sentencepiece",
        "humanfriendly",
        "soundfile",
        "pillow",
    ],
    entry_points={
        "console_scripts": [
            "speechclip-train=espnet_speechclip.bin.speechclip_train:main",
            "speechclip-s3prl-downstream=espnet_speechclip.s3prl_upstream.runner:main",
            "speechclip-pack=espnet_speechclip.bin.pack_model:main",
            "speechclip-upload=espnet_speechclip.bin.upload_model:main",
            "speechclip-s3prl-probe=espnet_speechclip.bin.s3prl_probe:main",
        ],
    },
)
