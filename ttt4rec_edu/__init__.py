"""ttt4rec_edu — TTT4Rec (Yang, Wang, Ge 2024) re-implemented to be read, run and taught.

One idea per module. The list runs downhill: a module imports only modules above it, apart from a package's
face (its ``__init__``), which gathers its own modules. ``tests/test_package.py`` checks that the import graph has
no circles, that nothing imports the command line, and that this list names every module in that order.

Data (``ttt4rec_edu.data``: the package's face re-exports what a reader needs)

- ``ttt4rec_edu.data.errors``        every data problem: ``DataError`` and its subclasses
- ``ttt4rec_edu.data.dataset_info``  ``DatasetInfo``: one registered dataset file, its source and settings
- ``ttt4rec_edu.data.readers``       the raw formats (Gowalla, Twitch, Amazon, RecBole ``.inter``, csv/tsv, sequences)
- ``ttt4rec_edu.data.protocol``      RecBole 1.2's sequential protocol: prefix samples, chronological ratio split
- ``ttt4rec_edu.data.filtering``     the paper's filters (repeated until stable), timestamps, user sequences
- ``ttt4rec_edu.data.download``      cache, mirror folders, resumable sha256-checked download
- ``ttt4rec_edu.data.synthetic``     users whose interests drift (chapter 11's laboratory)
- ``ttt4rec_edu.data.synthetic_history``  users whose own history matters, and their oracle (chapter 11)
- ``ttt4rec_edu.data.registry``      the paper's datasets, ``load_dataset`` and ``load_data_source``
- ``ttt4rec_edu.data.stats``         Table 1's statistics

The model

- ``ttt4rec_edu.utils``              devices, seeding, atomic file writes
- ``ttt4rec_edu.rope``               rotary position embedding
- ``ttt4rec_edu.ttt_scan``           the dual form's scan with a hand-written backward (the fast path)
- ``ttt4rec_edu.ttt``                the TTT layer: per-token loop, mini-batch loop, dual form, W_t trace
- ``ttt4rec_edu.official_weights``   the official layer's weights in and out of ``TTTLayer``
- ``ttt4rec_edu.backbones``          the Transformer / Mamba-style residual blocks around the TTT layer
- ``ttt4rec_edu.losses``             full-softmax cross-entropy, exact and memory-bounded
- ``ttt4rec_edu.models``             the model contract and registry: ``build_model(name, num_items, max_len)``
- ``ttt4rec_edu.ttt4rec``            the full TTT4Rec recommender
- ``ttt4rec_edu.baselines``          one file each: ``ttt4rec_edu.baselines.gru4rec``,
  ``ttt4rec_edu.baselines.narm``, ``ttt4rec_edu.baselines.sasrec``, ``ttt4rec_edu.baselines.bert4rec``,
  ``ttt4rec_edu.baselines.mamba4rec``, and the reference line ``ttt4rec_edu.baselines.pop``

Training and evaluation

- ``ttt4rec_edu.metrics``            full-ranking HR@K / NDCG@K, tie policies, chunked scoring
- ``ttt4rec_edu.recipes``            named training recipes (``official``, ``cpu6``); a run's recipe from its values
- ``ttt4rec_edu.checkpoint``         what a checkpoint holds besides the weights: every generator's state
- ``ttt4rec_edu.train``              the outer loop (``TrainConfig``: the one place training defaults live)
- ``ttt4rec_edu.distributed``        data-parallel training under ``torchrun``
- ``ttt4rec_edu.runner``             one run asked for (``TrainRequest``), set up and run (``run_one``), its
  folder's rules, "finished"
- ``ttt4rec_edu.reevaluate``         η = 0 at test from an adapting run's own best weights (a derived run)

Experiments and reading results

- ``ttt4rec_edu.experiments``        the paper's Tables 2-4 and the CPU-scale runs: define, run, collect, report
- ``ttt4rec_edu.estimate``           what a table will cost on a GPU, from counted FLOPs
- ``ttt4rec_edu.gpu_results``        measured GPU results beside those estimates
- ``ttt4rec_edu.analysis``           learning curves, per-sample comparisons, intervals (chapter 9)
- ``ttt4rec_edu.adaptation``         does adapting help? TTT4Rec's three arms, per user and over seeds
- ``ttt4rec_edu.drift_study``        three TTT4Rec arms on synthetic interest drift (Markov in the last item)
- ``ttt4rec_edu.history_study``      every arm against the oracle over repeats, taste and its drift (chapter 11)
- ``ttt4rec_edu.source_view``        the library's own code shown in the book, folded to the page (chapter 4)
- ``ttt4rec_edu.diagrams``           the dual form's blocks and the outer loop's graph (chapters 4-5)
- ``ttt4rec_edu.viz``                pictures and explorers of the hidden state W_t (chapter 7)

Teaching

- ``ttt4rec_edu.exercises``          the exercise checks, one module per part of the book:
  ``ttt4rec_edu.exercises.foundations`` (chapters 1-2), ``ttt4rec_edu.exercises.ttt_layer`` (3-5),
  ``ttt4rec_edu.exercises.model_and_baselines`` (6-8), ``ttt4rec_edu.exercises.experiments`` (9-11)
- the instructor kit, one job per module, its face last:
  ``ttt4rec_edu.exercises.chapters`` (reading a chapter's exercises; the index),
  ``ttt4rec_edu.exercises.export`` (student and solutions notebooks),
  ``ttt4rec_edu.exercises.wire`` (plain data between grader and submission),
  ``ttt4rec_edu.exercises.worker`` (the submission's side: run the cells, answer calls),
  ``ttt4rec_edu.exercises.sandbox`` (one bubblewrap sandbox per submission, limits),
  ``ttt4rec_edu.exercises.grading`` (one submission: checks in the grader's own process),
  ``ttt4rec_edu.exercises.gradebook`` (a folder: CSV, reports, Gradescope),
  ``ttt4rec_edu.exercises.instructor`` (the kit's face)

The command line

- ``ttt4rec_edu.cli``                ``python -m ttt4rec_edu {data,train,reproduce,model-summary,instructor}``,
  one module per command family: ``ttt4rec_edu.cli.options`` (what the commands share: options, recipes),
  ``ttt4rec_edu.cli.training`` (data stats, train, model-summary), ``ttt4rec_edu.cli.reproduce``,
  ``ttt4rec_edu.cli.instructor``
"""

__version__ = "0.1.0"
