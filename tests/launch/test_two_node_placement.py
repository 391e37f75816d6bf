"""A simulated two-node Ray cluster (ray.cluster_utils.Cluster): with STRICT_SPREAD the two learner ranks land on
different nodes, form one gloo group across them, and a short run completes."""

import pytest


pytestmark = pytest.mark.slow


def test_learner_ranks_spread_over_two_nodes(micro_model_dir, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from rlpipe.config.compose import load_config
    from rlpipe.driver.inputs import load_prompts
    from rlpipe.driver.session import LearnerSpec, Session

    # Ray's default temp root (Cluster always records its address there); the session dir is unique, and
    # cluster.shutdown() stops only this cluster's processes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        cfg = load_config([
            f"model.path={micro_model_dir}", "cluster.learner_placement_strategy=STRICT_SPREAD",
            "data.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.max_response_tokens=8",
            "data.heldout_size=8", "rollout=hf"])
        model = str(micro_model_dir)
        tokenize, prompts, _ = load_prompts(cfg, model)
        with Session(cfg, model, learner=LearnerSpec.of(cfg, model)) as session:  # joins the running cluster
            group = session.learner.group
            nodes = group.get([group.submit_to(i, "node_id") for i in range(2)], "node_id")
            assert len(set(nodes)) == 2, nodes
            trainer = session.trainer(prompts, tokenize)
            metrics = [trainer.step(s) for s in (1, 2)]
            assert all(m["rollout/num_samples"] == 16 for m in metrics)
    finally:
        ray.shutdown()
        cluster.shutdown()
