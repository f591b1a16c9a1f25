"""Batches with grain: epoch `e` shuffled with seed `seed + e`, so any (epoch, step) is
addressable and resuming needs only the step counter; each process reads and decodes only
its own rows of every global batch, in background threads with prefetch."""

import grain
import numpy as np

from unet_jax.data.datasets import Dataset


def epoch_samples(dataset: Dataset, batch_size: int, *, epoch: int, seed: int,
                  shuffle: bool = True, process_index: int = 0, process_count: int = 1,
                  augment=None) -> grain.MapDataset:
    """This process's samples of epoch `epoch`, in order, as `{"image", "mask"}` dicts: rows
    `process_index * b ... + b` of each global batch of `batch_size` (b = batch_size /
    process_count), so a process reads only its own. The last partial batch is dropped.
    `augment(image, mask, rng)` transforms each sample with a generator seeded by
    (seed, epoch, position in the epoch). A dataset that draws its samples (volume patches:
    `sample(index, rng, row)`) is asked for a new one with that generator and the
    sample's row in the global batch instead (`draws_samples`)."""
    if len(dataset) < batch_size:
        raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one batch "
                         f"of {batch_size}")
    drawn = getattr(dataset, "draws_samples", False)
    order = grain.MapDataset.range(len(dataset)) if drawn else grain.MapDataset.source(dataset)
    if shuffle:
        order = order.shuffle(seed=seed + epoch)
    rows = batch_size // process_count
    offset = process_index * rows

    def sample(q: int) -> dict:
        position = (q // rows) * batch_size + offset + q % rows
        if drawn:
            rng = np.random.default_rng([seed, epoch, position])
            image, mask = dataset.sample(order[position], rng, position % batch_size)
            return {"image": image, "mask": mask}
        image, mask = order[position]
        if augment is not None:
            image, mask = augment(image, mask, np.random.default_rng([seed, epoch, position]))
        return {"image": image, "mask": mask}

    return grain.MapDataset.range(len(dataset) // batch_size * rows).map(sample)


def batches(dataset: Dataset, batch_size: int, **kwargs) -> grain.MapDataset:
    """`epoch_samples` batched: random access to this process's rows of every global batch."""
    rows = batch_size // kwargs.get("process_count", 1)
    return epoch_samples(dataset, batch_size, **kwargs).batch(rows, drop_remainder=True)


def prefetched(samples: grain.MapDataset, rows: int, first: int, threads: int):
    """Batches of `rows` from batch `first` on, the samples decoded by `threads` background
    threads two batches ahead (0 threads: in the calling thread)."""
    if threads <= 0:
        batched = samples.batch(rows, drop_remainder=True)
        return (batched[i] for i in range(first, len(batched)))
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * rows)
    return iter(samples[first * rows:].to_iter_dataset(options).batch(rows, drop_remainder=True))


def padded_batches(dataset, batch_size: int, ignore_index: int, threads: int = 0,
                   process_index: int = 0, process_count: int = 1):
    """(this process's rows, real samples in the global batch) over every sample in order;
    the last partial batch is padded with zero images and `ignore_index` masks, so it is
    scored without a new compiled shape."""
    rows = batch_size // process_count
    n_batches = -(-len(dataset) // batch_size)
    image, mask = dataset[0]
    blank = (np.zeros_like(image), np.full_like(mask, ignore_index))

    def sample(q: int) -> dict:
        index = (q // rows) * batch_size + process_index * rows + q % rows
        image, mask = dataset[index] if index < len(dataset) else blank
        return {"image": image, "mask": mask}

    samples = grain.MapDataset.range(n_batches * rows).map(sample)
    for b, batch in enumerate(prefetched(samples, rows, 0, threads)):
        yield batch, min(batch_size, len(dataset) - b * batch_size)
