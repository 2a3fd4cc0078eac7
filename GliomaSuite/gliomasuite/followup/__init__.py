"""Follow-up of one patient over time: time points, registration onto the baseline, response."""
