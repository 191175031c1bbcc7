"""The final model and its use.

export           chooses the configuration, trains the final model, writes the model folder
model_folder     the model folder's format: portable program, weights, card; load_model
model_card       what the card says (data, settings, scores, input normalisation)
inference        predictions for new clips with a model folder, on Ray
"""
