# Input functions and params of the stacked jobs (train.stack): each member run's settings and files.


def stack_files(kind):
    """One kind of file of every run a stacked job trains, the seed's wildcards left in."""
    seed_run = {"dataset": "{dataset}", "model": "{model}", "seed": "{seed}"}
    return [
        paths.run_template(kind, method, EPSILON).format(
            **seed_run, method=method, epsilon=EPSILON
        )
        for method in STACKED
    ]


def stack_inputs(wildcards):
    """What a stacked job reads: the data, the pretrained model, the cascades its adv_cas* runs need."""
    terms = sorted({CASCADE_TERMS_OF[m] for m in STACKED if m in CASCADE_TERMS_OF})
    cascades = {
        f"cascade_{term}": paths.CASCADE.format(dataset=wildcards.dataset, terms=term)
        for term in terms
    }
    return {
        **data_files(wildcards),
        "pretrained": run_file("models", wildcards, "pretrain"),
        **cascades,
    }


def stack_member(run, hparams):
    """One run of a stacked job's ``--runs``: its settings (as its own job's) and the files it writes."""
    return {
        "hparams": hparams,
        **{
            name: paths.run_file(kind, **run)
            for name, kind in (
                ("checkpoint", "models"),
                ("curve", "curves"),
                ("metrics", "metrics"),
            )
        },
        "state_dir": paths.state_dir(run["method"], run["epsilon"]).format(**run),
    }


def stack_runs(wildcards):
    """``catrec finetune-stack --runs``: each run's settings, cascade and files.

    A function of the wildcards alone: Snakemake compares such params with the last run's, so a changed
    setting of one method re-runs the stack (whose other runs resume finished).
    """
    seed_run = {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "seed": int(wildcards.seed),
    }
    members = []
    for method in STACKED:
        terms = CASCADE_TERMS_OF.get(method)
        # epsilon from EPSILON, as the member's own job takes it from its path: one source
        hparams = stage_hparams(
            config, "finetune", **seed_run, method=method, epsilon=EPSILON
        )
        members.append(
            {
                "method": method,
                "cascade": (
                    paths.CASCADE.format(dataset=wildcards.dataset, terms=terms)
                    if terms
                    else None
                ),
                **stack_member(
                    {**seed_run, "method": method, "epsilon": EPSILON}, hparams
                ),
            }
        )
    return json.dumps(members, sort_keys=True)


def pretrain_stack_files(kind):
    """One kind of file of every seed's pretraining, the dataset and model wildcards left in."""
    return [
        paths.run_template(kind, "pretrain").format(
            dataset="{dataset}", model="{model}", seed=seed
        )
        for seed in SEEDS
    ]


def pretrain_stack_runs(wildcards):
    """``catrec pretrain-stack --runs``: each seed's settings and files (as its own pretrain job's)."""
    members = []
    for seed in SEEDS:
        run = {"dataset": wildcards.dataset, "model": wildcards.model, "seed": seed}
        hparams = stage_hparams(config, "pretrain", **run)
        members.append(
            stack_member({**run, "method": "pretrain", "epsilon": None}, hparams)
        )
    return json.dumps(members, sort_keys=True)


def max_stack_arg(wildcards):
    """``--max-stack`` of a stacked job (train.max_stack), or nothing where stacks are not bounded."""
    bound = config["train"]["max_stack"]
    return "" if bound is None else f"--max-stack {bound}"
