"""The embeddings service: conversion (`convert`, base64 vectors included), validation (`validation`) and
the servicer (`service`)."""
