"""YAML for files a user may not have written: PyYAML's safe loader with bounds.

``yaml.safe_load`` builds no objects but has no limits: a "billion laughs" file (aliases of
aliases) is a few hundred bytes that expand to 10^9 nodes the moment anything walks or prints the
result, and 500 nested brackets end in a RecursionError. Here nesting depth is capped while the
document is composed, and the node count the aliases would expand to is computed on the composed
graph (each shared node counted once per reference, in time linear in the file) before anything
is constructed. Every problem is one ``ValueError`` line naming the file.
"""
from __future__ import annotations

import yaml

MAX_BYTES = 1 << 20  # a sweep or cluster file is a few KiB
MAX_DEPTH = 50
MAX_NODES = 100_000  # after alias expansion


class _DepthBoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (before Python's stack)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"nested deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a graph whose alias expansion exceeds MAX_NODES or MAX_DEPTH, or that is cyclic.

    Iterative post-order over the composed graph; each node's expanded size and depth is
    computed once (memoised by identity), so a billion laughs costs a few dozen steps."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            started.discard(key)
            if size[key] > MAX_NODES:
                raise yaml.YAMLError(f"its aliases expand to more than {MAX_NODES:,} nodes "
                                     f"(line {node.start_mark.line + 1})")
            if depth[key] > MAX_DEPTH:
                raise yaml.YAMLError(f"its aliases nest deeper than {MAX_DEPTH} levels "
                                     f"(line {node.start_mark.line + 1})")
            continue
        if key in size:
            continue
        if key in started:
            raise yaml.YAMLError(f"an alias refers to itself (line {node.start_mark.line + 1})")
        started.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def load_bounded(text: str | bytes, source: str):
    """Parse one YAML document like ``yaml.safe_load``, within the bounds above.

    ``source`` names the file in the error. Raises ``ValueError`` (one line)."""
    if len(text) > MAX_BYTES:
        raise ValueError(f"{source}: {len(text):,} bytes — larger than the {MAX_BYTES:,} a YAML file "
                         f"here may have")
    loader = _DepthBoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())
        raise ValueError(f"{source}: not valid YAML: {problem}") from None
    except RecursionError:  # a construct we did not bound; never a traceback
        raise ValueError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
