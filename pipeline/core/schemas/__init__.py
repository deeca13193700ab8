"""Pandera schemas of the rows a file carries: conversion uploads and status updates."""
