"""A user's two-stage program that raydspy has never seen: pick the key phrases of a product
review, then rate it from them. Its reward is a DSPy metric, written as DSPy's docs write one."""

from __future__ import annotations

import dspy


class KeyPhrases(dspy.Signature):
    """Pick the phrases of the review that say what the customer thinks."""

    review: str = dspy.InputField()
    phrases: list[str] = dspy.OutputField()


class Rate(dspy.Signature):
    """Rate the review from 1 (bad) to 5 (great) from its key phrases."""

    phrases: list[str] = dspy.InputField()
    stars: int = dspy.OutputField()


class ReviewRater(dspy.Module):
    def __init__(self):
        super().__init__()
        self.pick = dspy.Predict(KeyPhrases)
        self.rate = dspy.Predict(Rate)

    def forward(self, review):
        phrases = self.pick(review=review).phrases
        return dspy.Prediction(phrases=phrases, stars=self.rate(phrases=phrases).stars)


def stars_match(example, pred, trace=None):
    """A DSPy metric: the predicted stars are the gold ones."""
    return int(pred.stars) == int(example.gold_stars)


def close_enough(inputs, outputs):
    """A raydspy reward: 1 - |error| / 4."""
    return 1.0 - abs(int(outputs["stars"]) - int(inputs["gold_stars"])) / 4


def rewards():
    return {"stars_match": stars_match, "close_enough": close_enough}
