"""A simulated two-node Ray cluster (ray.cluster_utils.Cluster): with STRICT_SPREAD the two learner ranks land on
different nodes, form one gloo group across them, and a short run completes."""

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_learner_ranks_spread_over_two_nodes(micro_model_dir, tmp_path):
    import ray
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from ray.cluster_utils import Cluster

    from rlpipe.config.schema import register_configs
    from rlpipe.driver import build
    from rlpipe.driver.prompts import build_prompts, chat_tokenizer
    from rlpipe.driver.run import make_trainer

    # Ray's default temp root (Cluster always records its address there); the session dir is unique, and
    # cluster.shutdown() stops only this cluster's processes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        register_configs()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = OmegaConf.to_object(compose("config", overrides=[
                f"model.path={micro_model_dir}", "cluster.learner_placement_strategy=STRICT_SPREAD",
                "data.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_response_tokens=8",
                "data.heldout_size=8", "rollout=hf"]))
        roles = build.build_roles(cfg, str(micro_model_dir), 256)
        nodes = roles.learner.group.get(
            [roles.learner.group.submit_to(i, "node_id") for i in range(2)], "node_id")
        assert len(set(nodes)) == 2, nodes
        tokenize, tokenizer = chat_tokenizer(str(micro_model_dir), cfg.data.max_prompt_tokens)
        prompts, _ = build_prompts(cfg.data)
        trainer = make_trainer(cfg, roles, prompts, tokenize, tokenizer)
        metrics = [trainer.step(s) for s in (1, 2)]
        assert all(m["rollout/num_samples"] == 16 for m in metrics)
        roles.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
