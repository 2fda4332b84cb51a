"""Checks that weights hold exactly the tensors a network needs, naming the first missing or unexpected one."""

# The tensors a torch BatchNorm holds besides its optional `num_batches_tracked` counter.
BATCH_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")


def check_tensor_names(received, expected, what, optional=()):
    """Raises naming the first missing and the first unexpected tensor unless `received` is exactly `expected`.

    Args:
        received: list of str. The tensor names found, in file order.
        expected: iterable of str. The names that must all be there.
        what: str. What the tensors should make up (for the message).
        optional: iterable of str. Names that may be there or not.
    """
    expected, allowed = list(expected), set(expected) | set(optional)
    missing = [name for name in expected if name not in set(received)]
    seen, unexpected = set(), []
    for name in received:
        if name not in allowed or name in seen:
            unexpected.append(name)
        seen.add(name)
    if not (missing or unexpected):
        return
    found = []
    for kind, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            found.append(f"the first {kind} tensor is {names[0]!r}{more}")
    raise ValueError(
        f"Expected the {len(expected)} tensors of {what}. Received {len(received)} tensors, "
        f"and {'; '.join(found)}."
    )
