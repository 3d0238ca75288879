"""Statistics shared by the benchmark scripts (imported by their inline
Python; standard library only)."""

import random
import statistics


def overhead_interval(subject, baseline, resamples=10000, seed=20261127):
    """95% bootstrap interval, in percent, of the overhead of `subject`
    over `baseline` by mean (mean(subject) / mean(baseline) - 1).

    The two lists are times of interleaved rounds, one of each per round:
    rounds are resampled whole, so that each subject time stays with the
    baseline time it was measured beside. A fixed seed: the same data
    gives the same interval."""
    pairs = list(zip(subject, baseline))
    if len(pairs) < 2:
        return None
    rng = random.Random(seed)
    estimates = []
    for _ in range(resamples):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        estimates.append((statistics.mean(s for s, _ in sample)
                          / statistics.mean(b for _, b in sample) - 1) * 100)
    estimates.sort()
    return estimates[int(0.025 * resamples)], estimates[int(0.975 * resamples) - 1]


def against(interval, goal):
    """What an overhead interval says of a goal of at most `goal` percent."""
    if interval is None:
        return "too few rounds for an interval"
    low, high = interval
    if high <= goal:
        return f"the whole interval is under +{goal:g}%"
    if low > goal:
        return f"the whole interval is over +{goal:g}%"
    return f"+{goal:g}% is inside the interval: this session cannot tell"
