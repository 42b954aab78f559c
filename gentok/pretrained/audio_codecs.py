"""transformers' EnCodec, DAC and Mimi behind gentok's audio tokenizer contract, so pretrained codecs get the same
API as the codec trained here (`encode(wav, sample_rate=None, n_quantizers=None) -> Tokens` with ids
`(b, frames, q)`, `decode`, `bitrate`, files through the CLI, `save_pretrained` / `gentok.load`; see
`gentok/tokenizers/audio/base.py`). transformers keeps codes as `(b, q, frames)`: the adapters transpose at their
edge.

Pretrained codecs load like every other project's checkpoint: `gentok.load(dir)` on a transformers checkpoint
directory (`config.json` + `model.safetensors`, read with `local_files_only=True`; pickled weights are refused), or
on a hub id the user names, goes through `detect` / `convert` here (the `gentok.converters` entry point).
`from_hf_config(cfg)` builds one with random weights (tests). The transformers config travels as JSON text inside
the gentok config, the weights in gentok's safetensors. Items of a padded batch are encoded one by one, because
these models' own padding semantics differ.
"""

from __future__ import annotations

import abc
import json
import math
from pathlib import Path

import torch
from torch import Tensor

from gentok.checkpoint import CheckpointError, register
from gentok.config import config
from gentok.pretrained.convert import safetensors_files
from gentok.tokenizers.audio.base import AudioTokenizer
from gentok.validate import PAD_ID


@config
class HFCodecConfig:
    hf_config: str = "{}"  # the transformers config, as JSON text (`PretrainedConfig.to_json_string()`)

    def __post_init__(self):
        try:
            data = json.loads(self.hf_config)
        except json.JSONDecodeError as e:
            raise ValueError(f"hf_config is not valid JSON: {e}") from None
        if not isinstance(data, dict) or "model_type" not in data:
            raise ValueError("hf_config must be a transformers config as JSON with a 'model_type'")


class HFAudioCodec(AudioTokenizer):
    """Shared adapter body; subclasses name the transformers classes and do the model-specific calls."""

    config_class = HFCodecConfig
    hf_model_type: str = None

    def __init__(self, config: HFCodecConfig):
        super().__init__()
        self.config = config
        data = json.loads(config.hf_config)
        if data["model_type"] != self.hf_model_type:
            raise ValueError(f"{type(self).__name__} wraps {self.hf_model_type!r} models, got {data['model_type']!r}")
        model_cls, config_cls = self._hf_classes()
        self.model = model_cls(config_cls.from_dict(data)).eval()
        self._check_supported()

    # -- construction ---------------------------------------------------------------------------------------------
    @staticmethod
    @abc.abstractmethod
    def _hf_classes() -> tuple[type, type]:
        """(transformers model class, its config class)."""

    def _check_supported(self) -> None:
        if getattr(self.model.config, "audio_channels", 1) != 1:
            raise ValueError(f"only mono {self.hf_model_type} models are supported, this one has "
                             f"{self.model.config.audio_channels} channels")

    @classmethod
    def from_hf_config(cls, hf_config) -> "HFAudioCodec":
        """A randomly initialised model from a transformers config object or dict."""
        data = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        return cls(HFCodecConfig(hf_config=json.dumps(data, default=_json_default)))

    # -- contract -------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sampling_rate)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.codebook_size)

    def forward(self, wav: Tensor):
        raise TypeError(f"{type(self).__name__} is an inference adapter; train with gentok's AudioCodec "
                        "or transformers itself")

    def _encode_frames(self, x: Tensor, frames: Tensor, k: int) -> Tensor:
        if bool((frames == frames.max()).all()):
            return self._encode_batch(x, k).transpose(1, 2)
        ids = torch.full((x.shape[0], int(frames.max()), k), PAD_ID, dtype=torch.long, device=x.device)
        for i, f in enumerate(frames.tolist()):  # one by one: exactly the codes each item gets alone
            ids[i, :f] = self._encode_batch(x[i:i + 1, : f * self.hop], k)[0].transpose(0, 1)
        return ids  # (b, frames, k)

    def _decode_frames(self, ids: Tensor, frames: Tensor) -> Tensor:
        codes = ids.transpose(1, 2).to(self._device())  # transformers' (b, k, frames)
        out = torch.zeros(codes.shape[0], codes.shape[-1] * self.hop, device=codes.device)
        if bool((frames == codes.shape[-1]).all()):
            return self._decode_batch(codes.contiguous())[:, : out.shape[-1]]
        for i, f in enumerate(frames.tolist()):
            out[i, : f * self.hop] = self._decode_batch(codes[i:i + 1, :, :f].contiguous())[0, : f * self.hop]
        return out

    @abc.abstractmethod
    def _encode_batch(self, x: Tensor, k: int) -> Tensor:
        """x (b, F * hop) -> codes (b, k, F), transformers' layout."""

    @abc.abstractmethod
    def _decode_batch(self, codes: Tensor) -> Tensor:
        """codes (b, k, F) -> audio (b, >= F * hop)."""


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} in a transformers config")


@register("audio.encodec")
class EncodecCodec(HFAudioCodec):
    """`transformers.EncodecModel` (24 kHz mono family: no chunking, no normalisation)."""

    hf_model_type = "encodec"

    @staticmethod
    def _hf_classes():
        from transformers import EncodecConfig, EncodecModel

        return EncodecModel, EncodecConfig

    def _check_supported(self):
        super()._check_supported()
        c = self.model.config
        if c.normalize or c.chunk_length_s is not None:
            raise ValueError("EnCodec models with normalize=True or chunk_length_s (the 48 kHz stereo family) are "
                             "not supported; use a mono model without chunking (e.g. the 24 kHz one)")

    @property
    def hop(self) -> int:
        return int(self.model.config.hop_length)

    @property
    def num_quantizers(self) -> int:
        return int(self.model.quantizer.num_quantizers)

    def _encode_batch(self, x, k):
        q = self.model.quantizer
        # EnCodec picks the depth from a bandwidth: ask for k + 0.5 levels' worth so flooring lands on k exactly
        bandwidth = (k + 0.5) * math.log2(q.codebook_size) * q.frame_rate / 1000
        return q.encode(self.model.encoder(x[:, None]), bandwidth).transpose(0, 1)

    def _decode_batch(self, codes):
        return self.model.decoder(self.model.quantizer.decode(codes.transpose(0, 1)))[:, 0]


@register("audio.dac")
class DacCodec(HFAudioCodec):
    """`transformers.DacModel` (Descript Audio Codec)."""

    hf_model_type = "dac"

    @staticmethod
    def _hf_classes():
        from transformers import DacConfig, DacModel

        return DacModel, DacConfig

    @property
    def hop(self) -> int:
        return int(self.model.config.hop_length)

    @property
    def num_quantizers(self) -> int:
        return int(self.model.config.n_codebooks)

    def _encode_batch(self, x, k):
        return self.model.encode(x[:, None], n_quantizers=k).audio_codes[:, :k]

    def _decode_batch(self, codes):
        return self.model.decode(audio_codes=codes).audio_values


@register("audio.mimi")
class MimiCodec(HFAudioCodec):
    """`transformers.MimiModel` (Kyutai's streaming codec; its first level is the semantic one)."""

    hf_model_type = "mimi"

    @staticmethod
    def _hf_classes():
        from transformers import MimiConfig, MimiModel

        return MimiModel, MimiConfig

    def _check_supported(self):
        super()._check_supported()
        hop = self.sample_rate / self.model.config.frame_rate
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(f"Mimi frame_rate {self.model.config.frame_rate} does not divide the sample rate")

    @property
    def hop(self) -> int:
        return round(self.sample_rate / self.model.config.frame_rate)

    @property
    def num_quantizers(self) -> int:
        return int(self.model.config.num_quantizers)

    def _encode_batch(self, x, k):
        return self.model.encode(x[:, None], num_quantizers=k).audio_codes

    def _decode_batch(self, codes):
        return self.model.decode(codes).audio_values[:, 0]


# -- converter (the `gentok.converters` entry point) ------------------------------------------------------------
ADAPTERS = {cls.hf_model_type: cls for cls in (EncodecCodec, DacCodec, MimiCodec)}


def detect(directory: Path, config: dict) -> bool:
    """A transformers checkpoint of one of the wrapped codecs: its config's `model_type` names it."""
    return isinstance(config, dict) and config.get("model_type") in ADAPTERS


def convert(directory: Path, config: dict, map_location="cpu") -> HFAudioCodec:
    """The gentok adapter of a transformers codec checkpoint directory, with its weights (never downloads)."""
    directory = Path(directory)
    cls = ADAPTERS[config["model_type"]]
    safetensors_files(directory)  # a clear refusal of pickled weights before transformers looks at the directory
    model_cls, _ = cls._hf_classes()
    try:
        hf = model_cls.from_pretrained(str(directory), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{directory}: not a {config['model_type']} checkpoint transformers can read: {e}") from None
    out = cls.from_hf_config(hf.config)
    out.model.load_state_dict(hf.state_dict())
    return out.to(map_location).eval()
