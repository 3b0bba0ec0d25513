"""Overrides that make a training run in a test take seconds: digits, 6 steps, a 64-unit MLP,
512 training and 128 test samples, no progress bar. Tests add their own overrides after these."""

QUICK = [
    "dataset=digits",
    "dataset.time_steps=6",
    "model.hidden=[64]",
    "trainer.batch_size=32",
    "trainer.max_train_samples=512",
    "trainer.lr=0.01",
    "trainer.max_test_samples=128",
    "trainer.progress=false",
]
