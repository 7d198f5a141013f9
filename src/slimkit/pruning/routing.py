"""Exact pruning through channel routing: ops that move channels by the tensor's size.

A channel split along the channel axis (``x.chunk(2, dim=1)``) or a channel shuffle
(``x.view(n, g, c // g, h, w).transpose(1, 2)``) sends channel ``i`` somewhere that depends on
how many channels there are, so the dependency graph blocks the spaces they carry
(ShuffleNet's trunk). Pruning them is still exact when every kept channel reaches the same
layers in the pruned model as in the original, only at other positions. `Router` finds out
by replaying the model's own code on *label* tensors (every element holds the number of its
channel), once at the original widths and once at the pruned widths, so each channel's
route — the layers whose inputs or parameters it meets — is read off both. Each pruned slot
is given the best original channel with the same route (per producing space), and every
layer on the way is sliced with an ordered index list. A component of spaces whose routes
cannot be matched (nor at a width a few channels away) stays blocked, with the reason.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

from slimkit.pruning.flows import Flow
from slimkit.pruning.labels import Key, Replay, Run, produces
from slimkit.pruning.surgery import Keeps

NO_WIDTH = "its channels are routed by size (split/shuffle) and no width keeps their routes"
REACH = 0.4
"""How far from its target (a fraction of it, at least 4 steps of ``round_to``) a width is looked
for when routes do not match at the target: nearest first, the narrower on a tie."""


class Router:
    """Label replays of a captured model: prunes blocked spaces whose only obstacle is routing.

    Args:
        gm: the captured model (a graph whose view sizes follow the tensors, i.e. fx-traced).
        env: the dependency graph's value per node (its producers' spaces).
        find: the dependency graph's space -> root lookup.
        sizes: channels per root space.
    """

    def __init__(self, gm: fx.GraphModule, env: dict[fx.Node, Any], find: Callable[[int], int], sizes: dict[int, int]):
        modules = dict(gm.meta.get("root", gm).named_modules())
        roots = {
            n: find(v.segs[0].space)
            for n, v in env.items()
            if n.op == "call_module" and isinstance(v, Flow) and produces(modules[str(n.target)])
        }
        self.sizes = sizes
        self.base: dict[int, int] = {}
        offset = 1  # label 0: no channel (inputs, constants)
        for root in sorted(sizes):
            self.base[root], offset = offset, offset + sizes[root]
        self.owner = [-1] * offset
        """The root space of each label."""
        for root, start in self.base.items():
            self.owner[start : start + sizes[root]] = [root] * sizes[root]
        self.replay = Replay(gm, roots, self.base, sizes, self.owner)
        self.original = self.replay({})

    # --- solving -------------------------------------------------------------------------
    def solve(
        self, targets: dict[int, int], scores: dict[int, torch.Tensor], taken: set[Key], step: int = 1
    ) -> tuple[Keeps, dict[int, int], dict[int, str]]:
        """Ordered kept indices for the spaces ``targets`` names (root -> channels to keep).

        Args:
            targets: wanted width per root space.
            scores: importance per channel of each root (the best of a route are kept).
            taken: layer axes other groups prune (a space meeting one stays blocked).
            step: widths are tried in multiples of this around each target.

        Returns:
            (keeps, kept count per pruned root, reason per root left blocked).
        """
        failed: dict[int, str] = {}
        comps = self._components(set(targets), taken, failed)
        widths = {r: targets[r] for comp in comps for r in comp}
        open_comps, done = list(comps), []
        reach = max(4, math.ceil(REACH * max(targets.values(), default=0) / step))
        for shift in (0, *(d * sign for d in range(1, reach + 1) for sign in (-1, 1))):
            if not open_comps:
                break
            trial = {r: widths[r] for c in done for r in c}
            for comp in open_comps:
                trial.update({r: self._width(r, targets[r], shift * step, step) for r in comp})
            run = self.replay(trial)
            for comp in list(open_comps):
                if self._matches(comp, run, {r: trial[r] for r in comp}):
                    widths.update({r: trial[r] for r in comp})
                    open_comps.remove(comp)
                    done.append(comp)
        for comp in open_comps:
            failed.update(dict.fromkeys(comp, NO_WIDTH))
        while done:  # the chosen widths together: one component's width must not move another's channels
            final = {r: widths[r] for c in done for r in c}
            run = self.replay(final)
            bad = [c for c in done if not self._matches(c, run, {r: final[r] for r in c})]
            if not bad and not self._others_unchanged(run, set(final)):
                bad = list(done)
            if not bad:
                return self._keeps(run, final, scores), final, failed
            for comp in bad:
                done.remove(comp)
                failed.update({r: "its channels' routes change with the other spaces' widths" for r in comp})
        return {}, {}, failed

    def _width(self, root: int, target: int, shift: int, step: int) -> int:
        """``target + shift`` within ``[step, size)``: a root asked to keep everything keeps its
        width, any other does not (keeping it whole would be no pruning, not a solution)."""
        size = self.sizes[root]
        return size if target >= size else max(step, min(target + shift, size - 1))

    def _components(self, roots: set[int], taken: set[Key], failed: dict[int, str]) -> list[set[int]]:
        """Roots grouped by the layers they meet together; roots that cannot be pruned by routing
        (a channel meets an op it cannot follow, a layer another group prunes, a repeated or
        unlabelled channel beside them) go to ``failed``."""
        parent = {r: r for r in roots}

        def find(r: int) -> int:
            while parent[r] != r:
                r = parent[r]
            return r

        for calls in self.original.seen.values():
            met = sorted({self.owner[v] for v in calls[0].long().tolist() if v > 0} & roots)
            for other in met[1:]:
                parent[find(other)] = find(met[0])
        comps: dict[int, set[int]] = {}
        for r in roots:
            comps.setdefault(find(r), set()).add(r)
        result = []
        for comp in comps.values():
            why = self._obstacle(comp, taken)
            if why is not None:
                failed.update(dict.fromkeys(comp, why))
            else:
                result.append(comp)
        return result

    def _obstacle(self, comp: set[int], taken: set[Key]) -> str | None:
        lost = sorted(v for v in self.original.lost if self.owner[v] in comp)
        if lost:
            return f"then it meets {self.original.where[lost[0]]}, which mixes channels"
        for key in set().union(*(self.original.met.get(r, set()) for r in comp)):
            if key in taken:
                return f"{key[0]} ({key[1]}) is pruned with another group"
            if not _one_way(self.original.seen[key]) or (self.original.seen[key][0] <= 0).any():
                return f"{key[0]} meets its channels in different ways, or one twice"
        return None

    def _matches(self, comp: set[int], run: Run, widths: dict[int, int]) -> bool:
        """Whether the pruned replay's routes of ``comp`` match the original's: no channel lost,
        the same layer axes met, each in one way, and per space no more slots on a route than
        original channels take it."""
        if any(self.owner[v] in comp for v in run.lost):
            return False
        keys = set().union(*(run.met.get(r, set()) for r in comp))
        if keys != set().union(*(self.original.met.get(r, set()) for r in comp)):
            return False
        if not all(_one_way(run.seen[key]) for key in keys):
            return False
        have, need = self._count(self.original.routes, comp), self._count(run.routes, comp)
        return all(need[r] <= have[r] and sum(need[r].values()) == widths[r] for r in comp)

    def _others_unchanged(self, run: Run, pruned: set[int]) -> bool:
        """Whether every channel of the spaces not in ``pruned`` meets the same layers as before."""
        return all(
            run.routes.get(v) == route for v, route in self.original.routes.items() if self.owner[v] not in pruned
        )

    def _count(self, routes: dict[int, frozenset[Key]], comp: set[int]) -> dict[int, Counter]:
        """Per root of ``comp``, how many of its channels take each route."""
        counts: dict[int, Counter] = {r: Counter() for r in comp}
        for label, route in routes.items():
            if self.owner[label] in comp:
                counts[self.owner[label]][route] += 1
        return counts

    def _keeps(self, run: Run, widths: dict[int, int], scores: dict[int, torch.Tensor]) -> Keeps:
        """Give each pruned slot the best original channel of its route, then slice every layer axis
        the slots meet in the order they meet it."""
        need = run.routes
        assign: dict[int, int] = {}
        for root in widths:
            by_route: dict[frozenset[Key], list[int]] = {}
            for label, route in self.original.routes.items():
                if self.owner[label] == root:
                    by_route.setdefault(route, []).append(label)
            slots: dict[frozenset[Key], list[int]] = {}
            for label, route in need.items():
                if self.owner[label] == root:
                    slots.setdefault(route, []).append(label)
            for route, wanted in slots.items():
                pool = by_route[route]
                best = sorted(pool, key=lambda v: -float(scores[root][v - self.base[root]]))[: len(wanted)]
                assign.update(zip(sorted(wanted), sorted(best), strict=True))
        keeps: Keeps = {}
        for key, calls in run.seen.items():
            labels = calls[0].long().tolist()
            if not any(v in assign for v in labels):
                continue
            position = {v: i for i, v in enumerate(self.original.seen[key][0].long().tolist())}
            keeps.setdefault(key[0], {})[key[1]] = [position[assign.get(v, v)] for v in labels]
        return keeps


def _one_way(calls: list[torch.Tensor]) -> bool:
    """Whether a layer axis met the same channels in every call, each channel once."""
    first = calls[0]
    return all(torch.equal(c, first) for c in calls[1:]) and len(set(first.tolist())) == len(first)
