"""The evaluation classifier agekit trains itself, plus the data plumbing the metrics share.

No pretrained network can be downloaded, so sample-quality and Stacked-MNIST mode metrics use a
small CNN trained here, deterministically, on the TRAIN split of the digit data set behind the
evaluated one, which the evaluated data set declares as its ``evaluation_classifier`` ('digits' ->
'digits', 'mnist5k' and 'stacked-mnist' -> 'mnist5k', 'stacked-mnist-local' -> the full MNIST of
its folder; Stacked MNIST is classified one channel at a time). Weights are cached under
``<cache_dir>/classifiers/`` keyed by the source data set (and its folder, for a local one) and a
hash of the training protocol; the protocol, with the measured test accuracy, is saved beside the
weights as JSON and travels with every score computed from them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agekit.components import ClassifierSource, DataSource, EvaluationContext
from agekit.datasets.validation import ValidationHeldOut
from agekit.registry import REGISTRY, RegistryError, create
from agekit.util.atomic import write_atomic
from agekit.util.network_modes import network_mode

#: Bump when the training code changes in a way the protocol fields do not capture, so that stale
#: cached weights are not reused.
TRAINING_CODE_VERSION = 1


# Data plumbing -----------------------------------------------------------------------------------
def load_split(
    data: DataSource,
    name: Literal["train", "test"],
    limit: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """(x, labels) of a split as CPU tensors; at most ``limit`` rows, a seeded random subset.

    A random subset rather than the first rows because splits may be ordered by class. Splits that
    do not offer :meth:`DataSource.tensors` are read item by item, stopping once ``limit`` is
    reached (then the subset is the first ``limit`` items: indexing a lazy split at random could be
    slow).
    """
    whole = data.tensors(name)
    if whole is not None:
        x, labels = whole
        x, labels = x.cpu(), labels.cpu()
        if limit is not None and limit < x.shape[0]:
            order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
            keep = order[:limit]
            x, labels = x[keep], labels[keep]
        return x, labels
    dataset = data.split(name)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for item_x, item_y in cast("Iterable[tuple[Any, Any]]", dataset):
        xs.append(torch.as_tensor(item_x))
        ys.append(torch.as_tensor(item_y))
        if limit is not None and len(xs) >= limit:
            break
    if not xs:
        raise ValueError(f"the {name} split is empty")
    return torch.stack(xs), torch.stack(ys)


def generate_samples(
    context: EvaluationContext,
    n: int,
    batch_size: int = 256,
    bn_mode: Literal["eval", "train"] = "eval",
) -> Tensor:
    """``n`` generator samples g(z), z ~ prior drawn from a generator seeded by ``context.seed``.

    z is drawn on the CPU so that the same seed gives the same codes on every device.
    """
    z = context.prior.sample(n, generator=torch.Generator().manual_seed(context.seed))
    out: list[Tensor] = []
    with network_mode([context.generator], bn_mode):
        for start in range(0, n, batch_size):
            batch = z[start : start + batch_size].to(context.device)
            out.append(context.generator(batch).float().cpu())
    return torch.cat(out)


# The network -------------------------------------------------------------------------------------
class DigitCNN(nn.Module):
    """Two conv blocks and two fully connected layers; 128-d penultimate features.

    Input is one-channel images in [-1, 1], resized to 32x32 if needed. Kept small so that training
    on ~5k digits fits well under a minute on two CPU cores.
    """

    architecture = "digitcnn-c8-c16-fc128-v1"
    channels = (8, 16)
    feature_dim = 128

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, self.channels[0], 3, padding=1)
        self.conv2 = nn.Conv2d(self.channels[0], self.channels[1], 3, padding=1)
        self.fc1 = nn.Linear(self.channels[1] * 8 * 8, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (32, 32):
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.features(x))


@dataclass(frozen=True)
class TrainingProtocol:
    """Everything that determines the trained weights; its hash names the cache file."""

    dataset: str
    image_size: int
    architecture: str = DigitCNN.architecture
    train_split: str = "train"
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    augmentation: str = "random-shift-2px"
    seed: int = 0
    code_version: int = TRAINING_CODE_VERSION
    #: The repr of the data set instance trained on when ``dataset``'s name alone does not say
    #: which digits those are (a local folder: its root); None, and left out of the record and of
    #: the key (so keys of registered data sets are unchanged), when ``dataset`` is created by name.
    instance: str | None = None

    def record(self) -> dict[str, Any]:
        """The fields, without ``instance`` when it is None."""
        fields = asdict(self)
        if fields["instance"] is None:
            del fields["instance"]
        return fields

    def key(self) -> str:
        payload = json.dumps(self.record(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def _random_shift(x: Tensor, generator: torch.Generator, pixels: int = 2) -> Tensor:
    """Translate each image by up to ``pixels`` in x and y, filling with the background (-1).

    Small shifts are the cheapest augmentation that keeps a 5k-image MNIST subset from overfitting;
    generator samples are rarely perfectly centred either.
    """
    _, _, h, w = x.shape
    padded = F.pad(x, (pixels, pixels, pixels, pixels), value=-1.0)
    shifts = torch.randint(0, 2 * pixels + 1, (x.shape[0], 2), generator=generator)
    out = torch.empty_like(x)
    # One slice per distinct (dy, dx): 25 cheap copies instead of a gather per pixel.
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
            if rows.numel():
                out[rows] = padded[rows, :, dy : dy + h, dx : dx + w]
    return out


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels on one thread, restoring the caller's settings afterwards.

    One thread because CPU reductions split across threads can sum in a thread-count-dependent
    order, which would make cached weights depend on the machine; one thread also cannot
    oversubscribe cores that other processes are busy on.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(threads)


def train_digit_classifier(x: Tensor, labels: Tensor, protocol: TrainingProtocol) -> DigitCNN:
    """Train :class:`DigitCNN` on CPU from a fixed seed; the same inputs give the same weights.

    Training runs on the CPU whatever the evaluation device: the network is tiny and CPU kernels
    are deterministic, so cached weights do not depend on where they were trained.
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected one-channel images (N, 1, H, W), got {tuple(x.shape)}")
    generator = torch.Generator().manual_seed(protocol.seed)
    x = x.float().cpu()
    labels = labels.long().cpu()
    with _deterministic():
        # nn.Module init draws from the global generator: seed it, but leave the caller's state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(protocol.seed)
            net = DigitCNN()
        optimiser = torch.optim.Adam(net.parameters(), lr=protocol.lr)
        steps_per_epoch = -(-x.shape[0] // protocol.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=protocol.epochs * steps_per_epoch
        )
        net.train()
        for _ in range(protocol.epochs):
            order = torch.randperm(x.shape[0], generator=generator)
            for start in range(0, x.shape[0], protocol.batch_size):
                idx = order[start : start + protocol.batch_size]
                batch = _random_shift(x[idx], generator)
                loss = F.cross_entropy(net(batch), labels[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
    net.eval()
    return net


@torch.no_grad()
def accuracy(net: DigitCNN, x: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    net.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        pred = net(x[start : start + batch_size].float()).argmax(1)
        correct += int((pred == labels[start : start + batch_size].long()).sum())
    return correct / x.shape[0]


# The evaluation classifier -----------------------------------------------------------------------
class EvaluationClassifier:
    """A trained :class:`DigitCNN` with its protocol; per-channel for Stacked MNIST.

    With ``per_channel`` the input is (N, C, H, W) and each channel is classified on its own:
    :meth:`features` concatenates the C feature vectors, :meth:`predict` returns the mode
    sum_c digit_c * 10^(C-1-c) (100*d1 + 10*d2 + d3 for three channels, channel 0 first).
    """

    def __init__(
        self,
        net: DigitCNN,
        protocol: dict[str, Any],
        per_channel: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.net = net.to(device).eval()
        self.protocol = dict(protocol, per_channel=per_channel)
        self.per_channel = per_channel
        self.device = torch.device(device)

    def _run(self, images: Tensor, fn: str, batch_size: int) -> Tensor:
        images = images.float()
        if images.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got {tuple(images.shape)}")
        channels = images.shape[1]
        if self.per_channel:
            images = images.reshape(-1, 1, *images.shape[2:])
        elif channels != 1:
            raise ValueError(f"this classifier takes one-channel images, got {channels} channels")
        outs: list[Tensor] = []
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(self.device)
                out = self.net.features(batch) if fn == "features" else self.net(batch)
                outs.append(out.cpu())
        out = torch.cat(outs)
        return out.reshape(-1, channels, out.shape[1]) if self.per_channel else out[:, None]

    def features(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """Penultimate activations, (N, 128) or (N, C * 128) per channel."""
        feats = self._run(images, "features", batch_size)
        return feats.flatten(1)

    def predict(self, images: Tensor, batch_size: int = 1024) -> Tensor:
        """Class (or Stacked-MNIST mode) of each image, (N,) int64."""
        digits = self._run(images, "logits", batch_size).argmax(-1)  # (N, C)
        powers = 10 ** torch.arange(digits.shape[1] - 1, -1, -1)
        return (digits * powers).sum(1)


def load_or_train(
    source: str,
    cache_dir: Path | str | None,
    image_size: int = 32,
    data: DataSource | None = None,
    **overrides: Any,
) -> tuple[DigitCNN, dict[str, Any]]:
    """The classifier for ``source`` (a digit data set name) from the cache, training it if absent.

    ``data`` may pass the already-built source data set; otherwise it is created through the
    registry with ``image_size``. ``overrides`` replace :class:`TrainingProtocol` fields (tests use
    fewer epochs); they change the cache key. Returns the network (CPU, eval mode) and the protocol
    record with the test accuracy. ``cache_dir=None`` trains without caching.
    """
    protocol = TrainingProtocol(dataset=source, image_size=image_size, **overrides)
    key = protocol.key()
    weights_path = json_path = None
    if cache_dir is not None:
        folder = Path(cache_dir) / "classifiers"
        weights_path = folder / f"{source}-{image_size}px-{key}.pt"
        json_path = weights_path.with_suffix(".json")
        if weights_path.exists() and json_path.exists():
            net = DigitCNN()
            net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
            return net.eval(), json.loads(json_path.read_text())
    if data is None:
        data = create("dataset", source, image_size=image_size)
    x_train, y_train = load_split(data, "train")
    x_test, y_test = load_split(data, "test")
    started = time.perf_counter()
    net = train_digit_classifier(x_train, y_train, protocol)
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {
        **protocol.record(),
        "key": key,
        "train_size": int(x_train.shape[0]),
        "test_size": int(x_test.shape[0]),
        "test_accuracy": accuracy(net, x_test, y_test),
        "train_seconds": round(seconds, 2),
        "torch_version": torch.__version__,
    }
    if weights_path is not None and json_path is not None:
        # Two evaluations may train the same classifier at once; readers never see half a file.
        text = json.dumps(record, indent=2)
        write_atomic(weights_path, lambda handle: torch.save(net.state_dict(), handle))
        write_atomic(json_path, lambda handle: handle.write(text.encode()))
    return net, record


def registered_datasets_where(test: Callable[[type[DataSource]], bool]) -> list[str]:
    """Names of the registered data set classes that pass ``test``, for error messages.

    Imports every data set's module; broken plugins and factories (not classes) are left out.
    """
    names = []
    for name in REGISTRY.available("dataset"):
        try:
            obj = REGISTRY.load("dataset", name)
        except RegistryError:
            continue
        if isinstance(obj, type) and issubclass(obj, DataSource) and test(obj):
            names.append(name)
    return names


def datasets_with_classifier() -> list[str]:
    """The registered data sets that declare an ``evaluation_classifier``."""
    return registered_datasets_where(lambda cls: cls.evaluation_classifier is not None)


def classifier_for(context: EvaluationContext) -> EvaluationClassifier:
    """The evaluation classifier ``context.data`` declares; a clear error if it declares none."""
    name = context.dataset_name
    declared: ClassifierSource | None = getattr(context.data, "evaluation_classifier", None)
    if declared is None:
        supported = datasets_with_classifier()
        raise ValueError(
            f"no evaluation classifier for data set {name!r}: classifier-based metrics support "
            f"{', '.join(supported)} (data sets that declare an `evaluation_classifier`)"
        )
    image_size = int(context.data.shape[-1])
    # Reuse the evaluated data set when it is the source; Stacked MNIST needs plain mnist5k, and
    # Stacked MNIST from a local folder the full MNIST it stacks (its `base`). The judge always
    # learns from the source's own train split: a run scored on a validation split held out of it
    # must not get (nor leave in the cache) a classifier trained on less.
    source = context.data.inner if isinstance(context.data, ValidationHeldOut) else context.data
    data = source if declared.dataset == name else None
    identity: dict[str, Any] = {}
    if declared.base is not None:
        data = getattr(source, declared.base)
        identity = {"instance": repr(data)}
    net, record = load_or_train(
        declared.dataset, context.cache_dir, image_size=image_size, data=data, **identity
    )
    return EvaluationClassifier(
        net, record, per_channel=declared.per_channel, device=context.device
    )
