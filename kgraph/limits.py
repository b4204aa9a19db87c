"""Bounds on what kgraph reads from a file before it trusts it: the size and nesting of a config,
the size of an archive member, of an HDF5 dataset and of the model's weights, and which HDF5
features may appear at all. Every check runs before the memory it guards is allocated, so a
hostile or broken file fails with one line naming the size instead of exhausting the machine.

Each limit is an environment variable (read at every check, so a test or a user can change it)
or an argument of the function that checks it."""

from __future__ import annotations

import math
import numbers
import os

from .runtime.files import FileFormatError


def _config_error(message):
    # imported here: the runtime reads weights through this module without the frontend
    from .frontend.errors import ConfigError

    return ConfigError(message)


GiB = 1 << 30
DEFAULTS = {
    "KGRAPH_MAX_BYTES": 8 * GiB,  # weights of a model, an HDF5 dataset, an archive member
    "KGRAPH_MAX_CONFIG_BYTES": 256 << 20,  # the text of a config
    "KGRAPH_MAX_CONFIG_NODES": 1 << 24,  # values in a config, every YAML alias expanded
    "KGRAPH_MAX_CONFIG_DEPTH": 200,  # nesting of a config (a nested model adds about 4)
}


def limit(name: str) -> int:
    """The limit `name` (a key of DEFAULTS): its environment variable, else the default."""
    text = os.environ.get(name)
    if not text:
        return DEFAULTS[name]
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} must be positive")
    return value


def size_str(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _too_big(what: str, n: int, name: str, cap: int) -> str:
    size = size_str(n) if n < 1024 else f"{size_str(n)} ({n} bytes)"
    return f"{what}: {size} is over the limit of {size_str(cap)} (raise {name} to allow it)"


def too_big(what: str, n: int, name: str) -> str:
    """The message of `n` bytes of `what` over the limit `name`."""
    return _too_big(what, n, name, limit(name))


def check_bytes(what: str, n: int, error=FileFormatError, max_bytes: int | None = None) -> None:
    """Refuse `n` bytes of `what` over KGRAPH_MAX_BYTES (or `max_bytes`)."""
    cap = max_bytes or limit("KGRAPH_MAX_BYTES")
    if n > cap:
        raise error(_too_big(what, n, "KGRAPH_MAX_BYTES", cap))


def check_weights(shapes, itemsize: int, what: str = "the model's weights", max_bytes: int | None = None) -> None:
    """Refuse a model whose weights (a list of shapes) would take more than the limit, before
    any of them is allocated. A dimension that is not a positive integer is a config error."""
    total = 0
    for shape in shapes:
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d <= 0:
                raise _config_error(f"a weight of shape {tuple(shape)} has a dimension that is not a positive integer")
        total += math.prod(shape) * itemsize
    check_bytes(f"{what} ({sum(math.prod(s) for s in shapes)} parameters)", total, _config_error, max_bytes)


# ---------------------------------------------------------------------- config text and trees


def check_config_size(n: int, source: str) -> None:
    """Refuse a config text of `n` characters (or bytes) over KGRAPH_MAX_CONFIG_BYTES."""
    cap = limit("KGRAPH_MAX_CONFIG_BYTES")
    if n > cap:
        raise _config_error(f"{source}: " + _too_big("the config", n, "KGRAPH_MAX_CONFIG_BYTES", cap))


_SCALARS = (str, int, float, bool, type(None))


def check_config_tree(data, source: str) -> None:
    """Refuse a parsed config that is not plain data (YAML timestamps, binary, sets, non-string
    keys), that refers to itself, or that is too large or too deep once every YAML alias is
    expanded. Shared values are measured once each, so a billion-node alias bomb costs a few
    thousand steps to refuse."""
    max_nodes, max_depth = limit("KGRAPH_MAX_CONFIG_NODES"), limit("KGRAPH_MAX_CONFIG_DEPTH")
    sizes = {}  # id of a container -> its size with aliases expanded
    active = set()  # ids of the containers on the current path (a cycle returns to one)
    stack = [(data, None, False)]  # (value, the key it is under, leaving)
    while stack:
        obj, key, leaving = stack.pop()
        where = f"the value under key {key[:40]!r}" if key is not None else "the top level"
        if leaving:
            kids = obj.values() if isinstance(obj, dict) else obj
            sizes[id(obj)] = 1 + sum(sizes.get(id(k), 1) for k in kids)
            active.discard(id(obj))
            if sizes[id(obj)] > max_nodes:
                raise _config_error(
                    f"{source}: the config has more than {max_nodes} values with its YAML aliases "
                    "expanded (an alias bomb?); raise KGRAPH_MAX_CONFIG_NODES to allow it"
                )
            continue
        if isinstance(obj, _SCALARS):
            continue
        if not isinstance(obj, (dict, list, tuple)):
            raise _config_error(
                f"{source}: {where} is a {type(obj).__name__} ({str(obj)[:40]!r}); a model config "
                "holds only mappings, lists, strings, numbers, booleans and nulls"
            )
        if id(obj) in sizes:
            continue
        if id(obj) in active:
            raise _config_error(f"{source}: {where} contains itself (a recursive YAML alias)")
        if len(active) >= max_depth:
            raise _config_error(
                f"{source}: the config is nested more than {max_depth} levels deep "
                "(raise KGRAPH_MAX_CONFIG_DEPTH to allow it)"
            )
        active.add(id(obj))
        stack.append((obj, key, True))
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise _config_error(
                        f"{source}: a mapping in {where} has a key {str(k)[:40]!r} "
                        f"of type {type(k).__name__}, not a string"
                    )
                stack.append((v, k, False))
        else:
            stack.extend((v, key, False) for v in obj)


# ---------------------------------------------------------------------- archives and HDF5


def read_member(archive, member: str, source: str, limit_name="KGRAPH_MAX_BYTES", cap=None, bound=None) -> bytes:
    """One member of a zip archive, refused when its declared or its actual size passes the limit
    `limit_name` (read in bounded chunks: a member's header may understate what it inflates to).
    `cap`, `bound`: a lower limit in bytes, and what it stands for in the message."""
    cap = min(cap or limit(limit_name), limit(limit_name))
    what = f"{source}: member {member}"

    def check(what, n):
        if n > cap:
            raise FileFormatError(
                f"{what}: {size_str(n)} ({n} bytes) is more than {bound} ({size_str(cap)})"
                if bound and cap < limit(limit_name)
                else _too_big(what, n, limit_name, cap)
            )

    info = archive.getinfo(member)
    check(what, info.file_size)
    chunks, total = [], 0
    with archive.open(info) as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
            check(f"{what} (inflated so far)", total)
            chunks.append(chunk)
    return b"".join(chunks)


def weights_file_bytes(weight_bytes: int, variables: int) -> int:
    """The most an HDF5 file of a model's weights can hold: the weights and five times them again
    (an optimizer's slots, moving averages), 64 KiB of HDF5 headers per variable and 1 MiB more,
    never over KGRAPH_MAX_BYTES. A weights member over it is no file of this model: refused before
    it is inflated (a 6 GiB zip bomb for a small model stayed under the 8 GiB limit of a model)."""
    return min(limit("KGRAPH_MAX_BYTES"), 6 * weight_bytes + (64 << 10) * 6 * variables + (1 << 20))


def check_h5(h5file, source: str, max_bytes: int | None = None) -> None:
    """Walk every link of an open HDF5 file before anything is read from it. Refuse external links
    (they open other files), datasets stored in external files or assembled from other files
    (virtual), datasets of no numeric type, and declared sizes over the limit, one dataset or
    all of them together."""
    import h5py

    cap = max_bytes or limit("KGRAPH_MAX_BYTES")
    total, seen, groups = 0, set(), [(h5file, "")]
    while groups:
        group, prefix = groups.pop()
        for name in group:
            path = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise FileFormatError(
                    f"{source}: {path} is an external link to {link.filename}:{link.path}; "
                    "kgraph reads nothing outside the file"
                )
            if isinstance(link, h5py.SoftLink):
                continue  # names a path of this same file, which the walk reaches by its hard link
            obj = group[name]
            key = (type(obj).__name__, obj.id.__hash__())
            if key in seen:
                continue
            seen.add(key)
            if isinstance(obj, h5py.Group):
                groups.append((obj, path))
                continue
            if not isinstance(obj, h5py.Dataset):
                continue
            if obj.is_virtual:
                raise FileFormatError(f"{source}: dataset {path} is virtual (mapped from other files); refused")
            if obj.external:
                raise FileFormatError(
                    f"{source}: dataset {path} is stored in an external file "
                    f"({obj.external[0][0]!r}); kgraph reads nothing outside the file"
                )
            if obj.dtype.kind not in "biuf" or obj.dtype.itemsize > 16:
                raise FileFormatError(f"{source}: dataset {path} has type {obj.dtype}, not a number")
            n = math.prod(obj.shape or ()) * obj.dtype.itemsize
            check_bytes(f"{source}: dataset {path} of shape {obj.shape}", n, max_bytes=cap)
            total += n
            check_bytes(f"{source}: the datasets together", total, max_bytes=cap)
