"""The data the optimizers learn from: a frozen, numpy-only snapshot.

The daemon turns its rated experience (and probe results) into one
:class:`Snapshot` when an evolution step starts; nothing in ``optimizers/``
knows about NATS, messages or the daemon. Shapes use ``N`` records, ``M``
providers and ``S`` skills; skill 0 is always ``"*"``, the fallback.

One record is one past request, kept so it can be re-decided under other
weights without calling any provider again:

* ``skill[n]``          which row of the weight matrix applies (0 = ``"*"``)
* ``answered[n, m]``    provider ``m`` was called and returned an answer
* ``sim[n, m, k]``      how much provider ``m``'s answer agrees with ``k``'s
                        (1/0 for extracted answers under ``vote``, a text
                        similarity in [0, 1] under ``select``; ``sim[n, m, m] = 1``)
* ``served[n]``         index of the provider whose answer was served
* ``reward[n]``         the rating of the served answer: 1.0 up, 0.0 down
                        (NaN for a probe record, which has ``truth`` instead)
* ``propensity[n]``     probability with which the served answer was chosen
                        (1.0 when the recipe's own pick was served)
* ``truth[n, m]``       ground truth for probe records: 1.0 / 0.0 per provider,
                        NaN where unknown (every user-rated record)
* ``weight[n]``         how much the record counts (probe weight, per-user caps)
* ``cost[m]``           relative cost of calling provider ``m`` (mean 1 over providers)

Optional, for the template genes (:mod:`alchemist.optimizers.templates` measures them):

* ``templates``         the genes' layout (:class:`TemplateGenes`: which skill and
                        provider each chooses for)
* ``option[n, m]``      the template option provider ``m`` was asked with on probe
                        record ``n`` (-1: not a probe answer, or no template gene)
* ``trial[n, m]``       whether that answer passed (1.0 / 0.0, NaN: no answer). Unlike
                        ``truth``, it is kept for answers asked with another template
                        than the incumbent's, which the weight replay leaves out.

Optional, for fitting a cascade (:mod:`alchemist.optimizers.cascade_fit`):

* ``complete[n]``       the request asked every provider its recipe calls at once (or an
                        ``explore`` request did), so any cascade can be replayed on it
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TemplateGenes:
    """The layout of the template genes: gene ``k`` is provider ``provider[k]`` on skill ``skill[k]``.

    ``options[k]`` counts the choices (>= 2: none, then the templates);
    ``current[k]`` is the incumbent's choice, the one probe answers count for
    in the weight replay.
    """

    skill: IntArray
    provider: IntArray
    options: IntArray
    current: IntArray

    def __post_init__(self) -> None:
        k = len(self.skill)
        for name in ("provider", "options", "current"):
            if getattr(self, name).shape != (k,):
                raise ValueError(f"template field {name!r} must have shape ({k},)")
        if k and (self.options.min() < 2 or self.current.min() < 0
                  or (self.current >= self.options).any()):
            raise ValueError("template genes need >= 2 options and a current option in range")

    @property
    def n(self) -> int:
        """How many template genes (K)."""
        return len(self.skill)

    @staticmethod
    def build(options: dict[int, int], n_providers: int,
              current: dict[tuple[int, int], int] | None = None) -> TemplateGenes:
        """Genes for every provider of each skill in ``options`` (skill index -> option count)."""
        cur = current or {}
        rows = [(s, m, n, cur.get((s, m), 0)) for s, n in sorted(options.items()) if n >= 2
                for m in range(n_providers)]
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
        skill, provider, opts, now = (np.asarray(c, np.int64) for c in cols)
        return TemplateGenes(skill, provider, opts, np.clip(now, 0, np.maximum(opts - 1, 0)))

    def clip(self, genes: FloatArray) -> FloatArray:
        """Genes (P, K) rounded to whole options in range."""
        out: FloatArray = np.clip(np.rint(genes), 0, self.options - 1).astype(np.float64)
        return out

    def chosen(self, genes: FloatArray) -> IntArray:
        """One genome's template genes (K,) as option indices."""
        out: IntArray = self.clip(np.asarray(genes, np.float64)[None, :])[0].astype(np.int64)
        return out

    def mutate(self, genes: FloatArray, uniform: FloatArray, hit: BoolArray) -> FloatArray:
        """Where ``hit``, replace a gene by one of its *other* options (``uniform`` in [0, 1)).

        Categorical: every other option is equally likely; no option is "next to" another.
        """
        width = self.options - 1
        step = 1 + np.minimum(np.floor(uniform * width), width - 1)
        moved = (genes + step) % self.options
        out: FloatArray = np.where(hit, moved, genes)
        return out

    def gene_space(self) -> list[list[float]]:
        """PyGAD's per-gene value lists of the template genes."""
        return [[float(v) for v in range(int(n))] for n in self.options]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of the rated experience, for one optimization step."""

    skills: tuple[str, ...]
    providers: tuple[str, ...]
    skill: IntArray
    answered: BoolArray
    sim: Float32Array
    served: IntArray
    reward: Float32Array
    propensity: Float32Array
    truth: Float32Array
    weight: Float32Array
    cost: FloatArray
    templates: TemplateGenes | None = None
    option: IntArray | None = None
    trial: Float32Array | None = None
    #: per record: every provider the recipe would call was asked (not a cascade that
    #: stopped early); None: all of them
    complete: BoolArray | None = None

    def __post_init__(self) -> None:
        n, m, s = len(self.skill), len(self.providers), len(self.skills)
        if not self.skills or self.skills[0] != "*":
            raise ValueError("skills must start with the fallback skill '*'")
        expected = {
            "answered": (n, m), "sim": (n, m, m), "served": (n,), "reward": (n,),
            "propensity": (n,), "truth": (n, m), "weight": (n,), "cost": (m,),
        }
        if self.templates is not None:
            expected.update(option=(n, m), trial=(n, m))
            if self.option is None or self.trial is None:
                raise ValueError("a snapshot with template genes needs 'option' and 'trial'")
        if self.complete is not None:
            expected["complete"] = (n,)
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"snapshot field {name!r} has shape {got}, expected {shape}")
        if n and (self.skill.min() < 0 or self.skill.max() >= s):
            raise ValueError(f"snapshot skill indices must lie in [0, {s})")

    @property
    def n_records(self) -> int:
        return len(self.skill)

    def subset(self, index: npt.NDArray[np.int64] | BoolArray) -> Snapshot:
        """The same snapshot restricted to some records (for train/hold-out splits)."""
        return Snapshot(
            skills=self.skills, providers=self.providers, skill=self.skill[index],
            answered=self.answered[index], sim=self.sim[index], served=self.served[index],
            reward=self.reward[index], propensity=self.propensity[index],
            truth=self.truth[index], weight=self.weight[index], cost=self.cost,
            templates=self.templates,
            option=None if self.option is None else self.option[index],
            trial=None if self.trial is None else self.trial[index],
            complete=None if self.complete is None else self.complete[index],
        )

    @property
    def n_weights(self) -> int:
        """Weight genes in a genome (S * M); template genes follow them."""
        return len(self.skills) * len(self.providers)

    @property
    def n_genes(self) -> int:
        """Genes in a genome: the weights, then one per template gene."""
        return self.n_weights + (self.templates.n if self.templates is not None else 0)

    @staticmethod
    def empty(skills: tuple[str, ...], providers: tuple[str, ...]) -> Snapshot:
        """A snapshot with no records."""
        m = len(providers)
        return Snapshot(
            skills=skills, providers=providers, skill=np.zeros(0, np.int64),
            answered=np.zeros((0, m), bool), sim=np.zeros((0, m, m), np.float32),
            served=np.zeros(0, np.int64), reward=np.zeros(0, np.float32),
            propensity=np.ones(0, np.float32), truth=np.zeros((0, m), np.float32),
            weight=np.ones(0, np.float32), cost=np.ones(m),
        )
