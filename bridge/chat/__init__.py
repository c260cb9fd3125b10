"""The chat completions service: conversion (`convert`), validation (`validation`), the end-of-stream rules
(`stream`) and the servicer (`service`)."""
