"""vde engine: stage contract, pipelines, executors, video I/O, manifests, resume and the CLI."""

STAGES = {
    "probe": "engine.probe:Probe",
    "split": "engine.scenes:SceneSplit",
    "write_clips": "engine.clips:WriteClips",
}
