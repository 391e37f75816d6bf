"""The Hydra presets (config groups), shipped inside the package so a wheel runs from any directory."""
