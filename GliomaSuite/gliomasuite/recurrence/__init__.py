"""Recurrence after treatment: growth simulated on real baselines (:mod:`.simulate`), the recurrent
U-Net (:mod:`.network`), its training (:mod:`.training`) and its use in a follow-up (:mod:`.inference`).
"""
