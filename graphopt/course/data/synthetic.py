"""Synthetic samples in the course's format: the embedded default data on a machine without any.

Movies and users follow Zipf-like popularity; each user has genre affinities; labels come from a
hidden preference model (movie quality + user leniency + genre match + a latent user-movie
interaction), so the Embedding+MLP has real signal to learn from both its ids and its profile features.
"""

import numpy as np

from graphopt.course.data.samples import (
    GENRE_FEATURES,
    GENRE_VOCAB,
    ID_FEATURES,
    LABEL,
    NUMERIC_FEATURES,
    TIMESTAMP,
    Samples,
)

_N_MOVIES = ID_FEATURES["movieId"] - 1  # ids 1..1000, as in the course's data
_N_USERS = ID_FEATURES["userId"] - 1
_LATENT = 4


def _zipf_weights(n, exponent, rng):
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(w / w.sum())


def generate_samples(n_rows=20000, seed=0):
    """``n_rows`` samples with the course's schema, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    n_genres = len(GENRE_VOCAB)
    genre_pop = _zipf_weights(n_genres, 0.9, rng)

    # Movies: 1-3 distinct genres, a release year, a hidden quality and a latent taste vector.
    movie_genres = np.full((_N_MOVIES, 3), -1)
    for m in range(_N_MOVIES):
        k = rng.integers(1, 4)
        movie_genres[m, :k] = rng.choice(n_genres, size=k, replace=False, p=genre_pop)
    movie_year = np.clip(np.round(1997 - rng.gamma(2.0, 6.0, _N_MOVIES)), 1920, 1997)
    movie_quality = rng.normal(0.0, 1.0, _N_MOVIES)
    movie_latent = rng.normal(0.0, 1.0, (_N_MOVIES, _LATENT))
    movie_pop = _zipf_weights(_N_MOVIES, 1.1, rng)

    # Users: genre affinities (sparse Dirichlet), leniency, latent taste.
    user_affinity = rng.dirichlet(np.full(n_genres, 0.3), _N_USERS)
    user_leniency = rng.normal(0.0, 0.7, _N_USERS)
    user_latent = rng.normal(0.0, 1.0, (_N_USERS, _LATENT))
    user_pop = _zipf_weights(_N_USERS, 0.8, rng)

    m = rng.choice(_N_MOVIES, size=n_rows, p=movie_pop)
    u = rng.choice(_N_USERS, size=n_rows, p=user_pop)

    genre_onehot = np.zeros((_N_MOVIES, n_genres))
    for slot in range(3):
        has = movie_genres[:, slot] >= 0
        genre_onehot[np.flatnonzero(has), movie_genres[has, slot]] = 1.0
    match = (user_affinity[u] * genre_onehot[m]).sum(1) / np.maximum(genre_onehot[m].sum(1), 1)
    match = (match - match.mean()) / (match.std() + 1e-9)
    latent = (user_latent[u] * movie_latent[m]).sum(1) / np.sqrt(_LATENT)
    logit = 0.2 + 1.2 * movie_quality[m] + 1.2 * user_leniency[u] + 0.8 * match + 0.3 * latent
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    columns = {
        "movieId": (m + 1).astype(np.int64),
        "userId": (u + 1).astype(np.int64),
        LABEL: label,
        TIMESTAMP: np.sort(rng.integers(820_000_000, 1_200_000_000, n_rows)).astype(np.int64),
    }
    # The observable profile features are noisy views of the hidden preference model.
    rating_count = np.round(20000 * movie_pop / movie_pop.max() * rng.uniform(0.5, 1.0, _N_MOVIES)) + 2
    numeric = {
        "releaseYear": movie_year[m],
        "movieRatingCount": rating_count[m],
        "movieAvgRating": np.clip(3.5 + 0.45 * movie_quality + rng.normal(0, 0.1, _N_MOVIES), 1, 5)[m],
        "movieRatingStddev": np.clip(rng.normal(0.95, 0.15, _N_MOVIES), 0.3, 1.7)[m],
        "userRatingCount": np.clip(np.round(100 * user_pop / user_pop.max() * 50), 2, 100)[u],
        "userAvgRating": np.clip(3.55 + 0.5 * user_leniency + rng.normal(0, 0.15, _N_USERS), 0.5, 5)[u],
        "userRatingStddev": np.clip(rng.normal(0.92, 0.3, _N_USERS), 0.0, 3.2)[u],
    }
    for name in NUMERIC_FEATURES:
        columns[name] = np.round(numeric[name], 2).astype(np.float32)

    vocab = np.array(("",) + GENRE_VOCAB, dtype=object)
    for slot in range(3):
        columns[f"movieGenre{slot + 1}"] = vocab[movie_genres[m, slot] + 1]
    # A user's profile genres are their top affinities; light users have fewer (empty cells).
    top = np.argsort(-user_affinity, axis=1)[:, :5]
    n_known = np.clip(np.round(columns["userRatingCount"] / 8), 1, 5).astype(int)
    for slot in range(5):
        known = n_known > slot
        columns[f"userGenre{slot + 1}"] = np.where(known, vocab[top[u, slot] + 1], "").astype(object)
    assert set(columns) == {*ID_FEATURES, LABEL, TIMESTAMP, *GENRE_FEATURES, *NUMERIC_FEATURES}
    return Samples(columns, source=f"synthetic(rows={n_rows}, seed={seed})")


def _splitmix(x):
    """splitmix64 finalizer on uint64 arrays: spreads (cohort, rank) over all 64-bit id values."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stream_window(window, rows, cohort_size, n_items=1000, fade=0.5, seed=0):
    """Window ``window`` of a click stream whose user ids arrive over time, with drift.

    Every window a cohort of ``cohort_size`` new user ids appears (arbitrary 63-bit values); a
    row's user comes from a cohort ``geometric(fade)`` windows old (recent users dominate, old
    ones fade out) and from it by Zipf(1.1) popularity. Items: ``n_items`` ids, Zipf(1.1). The
    label is Bernoulli(sigmoid(user bias + item bias + item drift)), the biases a function of
    the id, the drift a per-item sine over windows. Returns (user ids, item ids, labels).
    """
    rng = np.random.default_rng([seed, window])
    with np.errstate(over="ignore"):
        age = np.minimum(rng.geometric(fade, rows) - 1, window)
        ranks = np.minimum(rng.zipf(1.1, rows), cohort_size) - 1
        cohort = (window - age).astype(np.uint64)
        users = _splitmix(cohort * np.uint64(1 << 32) + ranks.astype(np.uint64) + np.uint64(seed << 48))
        users = (users >> np.uint64(1)).astype(np.int64)
        user_bias = ((users.astype(np.uint64) >> np.uint64(11)).astype(np.float64) / 2.0**52) * 4.0 - 2.0
    items = np.minimum(rng.zipf(1.1, rows), n_items).astype(np.int64) - 1
    item_rng = np.random.default_rng(seed)
    item_bias, phase = item_rng.normal(0, 1, n_items), item_rng.uniform(0, 2 * np.pi, n_items)
    logit = user_bias + item_bias[items] + np.sin(window / 3.0 + phase[items])
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return users, items, labels
