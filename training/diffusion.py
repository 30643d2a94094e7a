"""Gaussian diffusion for training and reference sampler steps (Improved DDPM
conventions): schedules in float64, q_sample, the hybrid loss
L_simple + 0.001 L_vlb with a stop-gradient mean, and the loss-second-moment
importance sampler."""
import math

import numpy as np
import torch


def betas_for(schedule, T):
    """Float64 betas for 'linear' or 'cosine' (s = 0.008, clipped at 0.999)."""
    if schedule == "linear":
        scale = 1000 / T
        return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    if schedule == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=np.float64)
    raise ValueError(f"unknown schedule {schedule!r}")


def normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + ((mean1 - mean2) ** 2) * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of x in [-1, 1] quantised to 256 bins under a Gaussian."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))


def _extract(arr, t, shape):
    out = torch.from_numpy(arr).to(torch.float32)[t]
    return out.reshape(-1, *([1] * (len(shape) - 1)))


class GaussianDiffusion:
    """Diffusion process with eps prediction and learned-range (or fixed) variance."""

    def __init__(self, betas, variance="learned_range"):
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        self.T = len(betas)
        self.variance = variance
        alphas = 1.0 - betas
        self.abar = np.cumprod(alphas)
        self.abar_prev = np.append(1.0, self.abar[:-1])
        self.sqrt_abar = np.sqrt(self.abar)
        self.sqrt_1m_abar = np.sqrt(1.0 - self.abar)
        self.sqrt_recip_abar = np.sqrt(1.0 / self.abar)
        self.sqrt_recipm1_abar = np.sqrt(1.0 / self.abar - 1)
        self.post_var = betas * (1.0 - self.abar_prev) / (1.0 - self.abar)
        self.post_log_var = np.log(np.append(self.post_var[1], self.post_var[1:]))
        self.post_c0 = betas * np.sqrt(self.abar_prev) / (1.0 - self.abar)
        self.post_ct = (1.0 - self.abar_prev) * np.sqrt(alphas) / (1.0 - self.abar)

    def q_sample(self, x0, t, noise):
        return _extract(self.sqrt_abar, t, x0.shape) * x0 + _extract(self.sqrt_1m_abar, t, x0.shape) * noise

    def q_posterior(self, x0, xt, t):
        mean = _extract(self.post_c0, t, xt.shape) * x0 + _extract(self.post_ct, t, xt.shape) * xt
        return mean, _extract(self.post_log_var, t, xt.shape)

    def p_mean_variance(self, model_out, xt, t, clip=True):
        """(mean, log variance, x0) from the raw network output (eps channels, then v)."""
        C = xt.shape[1]
        if self.variance == "learned_range":
            eps, v = model_out[:, :C], model_out[:, C:]
            min_log = _extract(self.post_log_var, t, xt.shape)
            max_log = _extract(np.log(self.betas), t, xt.shape)
            frac = (v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
        elif self.variance == "fixed_small":
            eps = model_out[:, :C]
            log_var = _extract(self.post_log_var, t, xt.shape).expand_as(xt)
        elif self.variance == "fixed_large":
            eps = model_out[:, :C]
            log_var = _extract(np.log(np.append(self.post_var[1], self.betas[1:])), t, xt.shape).expand_as(xt)
        else:
            raise ValueError(self.variance)
        x0 = _extract(self.sqrt_recip_abar, t, xt.shape) * xt - _extract(self.sqrt_recipm1_abar, t, xt.shape) * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_var, x0, eps

    def p_sample(self, model_out, xt, t, noise, clip=True):
        """One ancestral step x_t -> x_{t-1} with the noise given."""
        mean, log_var, _, _ = self.p_mean_variance(model_out, xt, t, clip)
        nonzero = (t != 0).float().reshape(-1, *([1] * (xt.dim() - 1)))
        return mean + nonzero * torch.exp(0.5 * log_var) * noise

    def ddim_sample(self, model_out, xt, t, t_prev_abar, noise, eta=0.0, clip=True):
        """One DDIM step; eps re-derived from the clipped x0 (guided-diffusion)."""
        _, _, x0, _ = self.p_mean_variance(model_out, xt, t, clip)
        eps = (_extract(self.sqrt_recip_abar, t, xt.shape) * xt - x0) / _extract(self.sqrt_recipm1_abar, t, xt.shape)
        abar = _extract(self.abar, t, xt.shape)
        abar_prev = torch.as_tensor(t_prev_abar, dtype=torch.float32).reshape(-1, *([1] * (xt.dim() - 1)))
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = x0 * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        nonzero = (t != 0).float().reshape(-1, *([1] * (xt.dim() - 1)))
        return mean + nonzero * sigma * noise

    def training_losses(self, model, x0, t, y, noise=None, mse_weight=None):
        """Per-example hybrid loss: w_t MSE(eps) + (T/1000) * VLB term (stop-grad mean); w_t = 1 unless
        mse_weight gives it (Min-SNR weighting). The network may run under autocast: its output is
        taken back to float32 before the losses."""
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, t, noise)
        out = model(xt, t, y).float()
        C = x0.shape[1]
        eps, v = out[:, :C], out[:, C:]
        mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
        frozen = torch.cat([eps.detach(), v], dim=1)
        mean, log_var, _, _ = self.p_mean_variance(frozen, xt, t, clip=False)
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        weighted = mse if mse_weight is None else mse * mse_weight
        return weighted + vb * (self.T / 1000.0), mse, vb


class LossSecondMomentSampler:
    """Improved DDPM's importance sampler: p_t ~ sqrt(E[L_t^2]) once every t has 10 losses."""

    def __init__(self, T, history=10, uniform_prob=0.001):
        self.T, self.history, self.uniform_prob = T, history, uniform_prob
        self.losses = np.zeros((T, history), dtype=np.float64)
        self.counts = np.zeros(T, dtype=np.int64)

    def weights(self):
        if not (self.counts == self.history).all():
            return np.ones(self.T, dtype=np.float64)
        w = np.sqrt(np.mean(self.losses ** 2, axis=-1))
        w /= w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, n, rng):
        w = self.weights()
        p = w / w.sum()
        t = rng.choice(self.T, size=n, p=p)
        return torch.from_numpy(t).long(), torch.from_numpy(1 / (self.T * p[t])).float()

    def update(self, t, losses):
        for ti, li in zip(t.tolist(), losses.tolist()):
            if self.counts[ti] == self.history:
                self.losses[ti, :-1] = self.losses[ti, 1:]
                self.losses[ti, -1] = li
            else:
                self.losses[ti, self.counts[ti]] = li
                self.counts[ti] += 1


def space_timesteps(T, spacing):
    """guided-diffusion respacing: 'ddimN' or a comma list of per-section counts (round half to even)."""
    if isinstance(spacing, str) and spacing.startswith("ddim"):
        n = int(spacing[4:])
        for stride in range(1, T):
            if len(range(0, T, stride)) == n:
                return sorted(set(range(0, T, stride)))
        raise ValueError(f"cannot create exactly {n} steps with an integer stride")
    counts = [int(c) for c in str(spacing).split(",")]
    size_per, extra = divmod(T, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        frac = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += frac
        start += size
    return sorted(set(kept))


def respaced_betas(betas, kept):
    """beta'_k = 1 - abar_{t_k} / abar_{t_{k-1}}."""
    abar = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    out, last = [], 1.0
    for t in kept:
        out.append(1 - abar[t] / last)
        last = abar[t]
    return np.array(out, dtype=np.float64)
