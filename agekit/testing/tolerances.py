"""How far the kit lets an estimate stray from what it checks it against, and the finite-difference
step of the gradient check."""

#: Standard errors allowed on top of the declared tolerance when a property holds "in expectation":
#: with the kit's fixed seeds a correct estimator fails a 4-sigma bound with probability ~6e-5.
#: The standard error is measured on every run, in total nats: for kozachenko-leonenko at B = 128
#: one batch's KL has sd 0.04-0.09 nats at the default priors and at M = 64, so 16 batches allow
#: tolerance + 0.04-0.09 nats at equality (4 standard errors of a 16-batch mean are one sd), and a
#: bias of 0.05 nats per dimension (0.8 nats at M = 16) is far outside.
SIGMAS = 4.0

#: Share of the true value allowed on top of the declared tolerance when one estimate is compared
#: with its closed form: kNN estimators underestimate concentrated distributions by a number of
#: nats that grows with M (the first vMF member at B = 128, k = 3: -1.1 nats of 52 at M = 16, -12
#: of 218 at M = 64, -30 of 440 at M = 128, 6.8%; k = 1 and 5 within 0.3 points of k = 3), and
#: parametric ones carry an O(1/B) bias. The vMF scale check has no such share: it is what catches
#: a factor within 10% of 1.
CLOSED_FORM_RELATIVE = 0.1

#: Step of the finite-difference gradient check, times the prior's scale sqrt(sum var). The step
#: is a unit direction over all B x M coordinates, so a code moves ~1e-5 on average at B = 128;
#: float64 rounding in the difference quotient is ~1e-16 |D| / 1e-4, truncation O(step^2).
FD_STEP = 1e-4

#: How far the slope measured by finite differences along the gradient may be from |gradient|:
#: within a factor FD_RATIO either way. Exact gradients agree to ~1e-4 relative; a divergence that
#: computes a data-dependent scale without gradient (agekit-mmd's rbf median bandwidth, by design)
#: was measured between 0.58x and 1.9x. A sign error, a zero gradient or a missing 1/B factor
#: is far outside.
FD_RATIO = 4.0
