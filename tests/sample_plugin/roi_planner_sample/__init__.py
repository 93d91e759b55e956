"""A third-party technique, packaged the way any team would ship its own."""

from plugins.base import Context, Param, Technique


class ClipOutliers(Technique):
    """Clips every Linear weight to a number of standard deviations of its layer, a common step before
    low-bit quantization, since a few outliers otherwise stretch the quantization range.

    Source: the clipping baseline in Zhao et al. 2019, "Improving Neural Network Quantization without
    Retraining using Outlier Channel Splitting".
    """

    name = "sample.clip-outliers"
    title = "Clip weight outliers (sample plugin)"
    family = "prune"
    devices = ("cpu", "cuda")
    tasks = ("sequence-classification", "causal-lm")
    params = (Param("sigmas", float, 3.0, "Clip each weight to ± this many standard deviations.", 0.5, 10.0),)

    def apply(self, model, ctx: Context, params):
        import torch

        clipped = total = 0
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    bound = float(module.weight.std()) * params["sigmas"]
                    clipped += int((module.weight.abs() > bound).sum())
                    total += module.weight.numel()
                    module.weight.clamp_(-bound, bound)
        ctx.notes["clipped weights"] = f"{clipped} of {total}"
        ctx.report(1.0, f"clipped {clipped} weights")
        return model
